"""The QLoRA export check: `python -m tuneforge.bench.qlora_export RUN_DIR`.

Loads a finished qlora run (4-bit base + adapter), computes logits on a fixed prompt, merges (dequantise →
re-attach LoRA → merge, methods.merge) into a plain fp32 model, saves and reloads it, and prints the
largest logit differences and the parameter + buffer bytes of each model as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from tuneforge.bench.speed import BenchError
from tuneforge.bench.worker import model_bytes

PROMPT = [{"role": "user", "content": "Convert to ISO 8601: 14 March 2021"}]


def check(run_dir: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from tuneforge.methods import load_trained, merge, model_load_kwargs, saved_params
    from tuneforge.models.loader import load_model, load_tokenizer
    from tuneforge.runs import model_config_of_run

    model_cfg, adapter = model_config_of_run(run_dir)
    params = saved_params(adapter)
    if params is None or params.name != "qlora":
        raise BenchError(f"{run_dir} is not a qlora run (no adapter trained with method.name=qlora)")
    tokenizer = load_tokenizer(model_cfg)
    ids: dict[str, Any] = dict(
        tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)  # type: ignore[arg-type]
    )
    base = load_model(model_cfg, tokenizer, **model_load_kwargs(params))
    quantised = load_trained(base, adapter).eval()
    out: dict[str, Any] = {"quantised_model_mb": round(model_bytes(quantised) / 2**20, 1)}
    with torch.no_grad():
        q_logits = quantised(**ids).logits.float()
        merged = merge(quantised).eval()
        m_logits = merged(**ids).logits.float()
    out["merged_dtype"] = str(next(merged.parameters()).dtype)
    out["merged_model_mb"] = round(model_bytes(merged) / 2**20, 1)
    out["merged_has_bnb"] = any("bitsandbytes" in type(m).__module__ for m in merged.modules())
    out["max_abs_logit_diff_merged_vs_adapter"] = float((q_logits - m_logits).abs().max())
    out["same_argmax"] = bool((q_logits.argmax(-1) == m_logits.argmax(-1)).all())
    with tempfile.TemporaryDirectory() as tmp:
        merged.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
        with torch.no_grad():
            r_logits = reloaded(**ids).logits.float()
    out["max_abs_logit_diff_reloaded_vs_merged"] = float((r_logits - m_logits).abs().max())
    return out


if __name__ == "__main__":
    print(json.dumps(check(Path(sys.argv[1])), indent=2))
