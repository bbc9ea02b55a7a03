"""Reload an exported GGUF in llama.cpp itself (llama-cpp-python, the optional extra `tuneforge[llamacpp]`).

transformers' GGUF reader dequantises a file back into a PyTorch model, which checks the tensors but not what a
llama.cpp user runs: llama.cpp's own graph, its rotary layout, its tokenizer and its LoRA adapter loading. When
llama-cpp-python is installed, `tuneforge export` also scores the verification prompts in llama.cpp (the same
token ids, fed with `Llama.eval`) and compares the next-token log-probabilities with the source model; it also
checks that llama.cpp's tokenizer, reading the file's vocabulary, splits each prompt into the same ids.

llama-cpp-python compiles llama.cpp from source when installed (≈12 min on 2 cores), hence an optional extra.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

INSTALL_HINT = "pip install 'tuneforge[llamacpp]' (compiles llama.cpp from source, ≈12 min on 2 cores)"


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def version() -> str:
    return importlib.metadata.version("llama-cpp-python") if available() else "not installed"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp logs from C to fd 2 while loading even with verbose=False; keep a person's terminal readable."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load(gguf: Path, lora: Path | None = None, n_ctx: int = 512) -> Any:
    """A llama_cpp.Llama on `gguf` (plus a GGUF LoRA adapter), keeping every position's logits."""
    if not available():
        raise RuntimeError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {"model_path": str(gguf), "n_ctx": n_ctx, "logits_all": True, "verbose": False}
    kwargs["n_threads"] = torch.get_num_threads()
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    with _quiet_stderr():
        return Llama(**kwargs)


def next_token_logprobs(llm: Any, prompts: list[list[int]]) -> list[torch.Tensor]:
    """log-softmax of llama.cpp's logits after each prompt (token ids fed as they are: no BOS added)."""
    out = []
    for ids in prompts:
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        out.append(torch.log_softmax(torch.from_numpy(logits), dim=-1))
    return out


def tokenizer_agrees(llm: Any, texts: list[str], ids: list[list[int]]) -> list[bool]:
    """Whether llama.cpp's tokenizer (the file's vocabulary) splits each rendered prompt into the same ids."""
    pairs = zip(texts, ids, strict=True)
    return [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) == list(i) for t, i in pairs]
