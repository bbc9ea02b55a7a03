"""tuneforge: specialise language models to a domain, offline on a CPU, one config language."""

__version__ = "0.1.0"
