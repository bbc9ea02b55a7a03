"""Reload an exported GGUF in llama.cpp itself (llama-cpp-python, the optional extra `tuneforge[llamacpp]`).

transformers' GGUF reader dequantises a file back into a PyTorch model, which checks the tensors but not what a
llama.cpp user runs: llama.cpp's own graph, its rotary layout, its tokenizer and its LoRA adapter loading. When
llama-cpp-python is installed, `tuneforge export` also scores the verification prompts in llama.cpp (the same
token ids, fed with `Llama.eval`) and compares the next-token log-probabilities with the source model; it also
checks that llama.cpp's tokenizer, reading the file's vocabulary, splits each prompt into the same ids.

llama-cpp-python compiles llama.cpp from source when installed (≈12 min on 2 cores), hence an optional extra.

llama.cpp runs in a child process (`score_in_child`): pip's default build targets the build machine's CPU
(`GGML_NATIVE`), and such a build dies with SIGILL on a CPU that lacks an instruction it chose (seen on an AMX
Xeon). A crash there is reported (the signal's name) instead of ending the export; docs/export.md has the
portable build flags.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneforge.errors import TuneforgeError

INSTALL_HINT = "pip install 'tuneforge[llamacpp]' (compiles llama.cpp from source, ≈12 min on 2 cores)"
PORTABLE_BUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" '
    "pip install --force-reinstall --no-cache-dir llama-cpp-python (on an AVX2-only CPU: "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF")'
)
CHILD_TIMEOUT_S = 600.0


class LlamaCppCrashed(TuneforgeError, RuntimeError):
    """llama.cpp's process died (a signal) or hung: usually a build for another CPU; the message says how to rebuild."""


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


def _child_main(
    conn: Any, gguf: str, lora: str | None, prompts: list[list[int]], texts: list[str], threads: int
) -> None:
    """In the child: load llama.cpp, score the prompts, check its tokenizer; send the result (or the error) back."""
    try:
        torch.set_num_threads(threads)
        llm = load(Path(gguf), Path(lora) if lora else None, n_ctx=max(len(p) for p in prompts) + 16)
        try:
            logprobs = [t.numpy() for t in next_token_logprobs(llm, prompts)]
            same = tokenizer_agrees(llm, texts, prompts)
        finally:
            if hasattr(llm, "close"):
                llm.close()
        conn.send(("ok", logprobs, same))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}", None))
    finally:
        conn.close()


# The child's entry point, read at each call (tests swap in one that dies by a signal).
CHILD_ENTRY: Callable[..., None] = _child_main


def score_in_child(
    gguf: Path, lora: Path | None, prompts: list[list[int]], texts: list[str], timeout_s: float = CHILD_TIMEOUT_S
) -> tuple[list[torch.Tensor], list[bool]]:
    """(next-token log-probs per prompt, llama.cpp's tokenizer agrees per prompt), computed in a spawned process.

    Raises LlamaCppCrashed when the process dies by a signal or does not answer within `timeout_s`, and
    RuntimeError with the child's message when llama.cpp raised an error.
    """
    ctx = multiprocessing.get_context("spawn")  # no fork: a fresh interpreter, no copied torch thread pools
    parent, child = ctx.Pipe(duplex=False)
    args = (child, str(gguf), str(lora) if lora else None, prompts, texts, torch.get_num_threads())
    proc = ctx.Process(target=CHILD_ENTRY, args=args, name="tuneforge-llama.cpp", daemon=True)
    proc.start()
    child.close()
    try:
        message = _receive(parent, proc, timeout_s)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if message is None:
        raise LlamaCppCrashed(_crash_text(gguf, proc.exitcode, timeout_s))
    status, payload, same = message
    if status != "ok":
        raise RuntimeError(str(payload))
    return [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in payload], list(same)


def _receive(conn: Any, proc: Any, timeout_s: float) -> Any:
    """The child's one message, or None when it died (or hung) without sending it."""
    waited = 0.0
    while waited < timeout_s:
        if conn.poll(0.2):
            try:
                return conn.recv()
            except EOFError:  # it closed the pipe while dying
                return None
        waited += 0.2
        if not proc.is_alive() and not conn.poll(0):
            return None
    return None


def _crash_text(gguf: Path, exitcode: int | None, timeout_s: float) -> str:
    if exitcode is None:
        return f"llama.cpp did not answer within {timeout_s:.0f} s on {gguf.name}; its process was stopped"
    if exitcode < 0:
        sig = signal.Signals(-exitcode)
        how = f"died with {sig.name} ({signal.strsignal(sig) or sig.name})"
    else:
        how = f"exited with status {exitcode} without an answer"
    hint = ""
    if exitcode == -signal.SIGILL:
        hint = f"; llama-cpp-python was built for another CPU: rebuild it with {PORTABLE_BUILD}"
    return f"llama.cpp {how} on {gguf.name}{hint}"
