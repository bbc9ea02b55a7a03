"""Inference: load a base model (with a run's adapter) and generate, the one engine every workflow uses.

A run folder is read through `tuneforge.runs` (`model_config_of_run`), never here.
"""

from tuneforge.inference.engine import EngineError, GenerationParams, LocalEngine

__all__ = ["EngineError", "GenerationParams", "LocalEngine"]
