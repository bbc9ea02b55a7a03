"""Readable logs: one line per event, timestamps, the tuneforge logger tree; library chatter kept quiet."""

from __future__ import annotations

import logging
import os
import sys
import warnings


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (it may have been replaced since setup, e.g. by a test runner)."""

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # type: ignore[no-untyped-def]
        pass


# Warnings libraries print that a user of tuneforge cannot act on: (logger, text in the message).
# bitsandbytes >= 0.49 looks for an optional kernel on the Hugging Face hub whenever the CPU has AVX512-BF16 / AMX
# and warns when the `kernels` package is missing; tuneforge never downloads at run time, and the fallback it
# takes is bitsandbytes' own CPU kernel, so the warning only alarms (it printed on every command).
# DeepSpeed, when installed, is imported by transformers' Trainer and says on every CPU run that it found no GPU.
UNACTIONABLE = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("DeepSpeed", "Setting accelerator to CPU"),
)


class _DropUnactionable(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_unactionable() -> None:
    """Drop the UNACTIONABLE records at their own loggers (a filter on a parent would not see them)."""
    for name, text in UNACTIONABLE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropUnactionable) and f.text == text for f in logger.filters):
            logger.addFilter(_DropUnactionable(text))


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("tuneforge")
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Records still propagate (to the root logger's handlers, if an embedding program or pytest set any);
    # tuneforge itself never configures the root logger, so nothing is printed twice.
    if not verbose:
        quiet_unactionable()
        # transformers/datasets warn about things users cannot act on (e.g. GGUF dequantisation notes).
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def offline_env() -> None:
    """tuneforge never downloads at run time: make the HF libraries fail fast instead of hanging on the network."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
