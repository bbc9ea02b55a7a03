"""Two-step dpo runs per loss on the tiny model: finite loss, parameters changed, artifacts written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.test_sft import make_cfg
from tuneforge.config import ConfigError, load
from tuneforge.methods import METHOD_PARAMS
from tuneforge.stages import STAGES, run_stage


def write_pairs(path: Path, n: int = 12) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
            "chosen": [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}],
            "rejected": [{"role": "assistant", "content": f"{i} plus {i} is {2 * i + 1}."}],
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def dpo_cfg(tmp_path: Path, model_dir: Path, **sections: Any) -> dict[str, Any]:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    data = {"datasets": [{"path": str(pairs), "format": "preference"}], "cutoff_len": 64}
    return make_cfg(tmp_path, model_dir, **{"stage": "dpo", "data": data, **sections})


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge", "robust", "orpo", "simpo"])
def test_dpo_losses_train_two_steps(tmp_path: Path, tiny_model_dir: Path, loss: str) -> None:
    dpo: dict[str, Any] = {"loss": loss}
    if loss == "robust":
        dpo["label_smoothing"] = 0.1
    cfg = load(dpo_cfg(tmp_path, tiny_model_dir, dpo=dpo), methods=METHOD_PARAMS)
    result = run_stage(cfg)
    run = result.run_dir
    assert result.steps == 2
    seen = losses(run)
    assert seen and all(math.isfinite(x) for x in seen)
    assert (run / "config.yaml").is_file() and (run / "plots" / "loss.png").is_file()
    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())  # B started at 0
    assert not (run / "adapter" / "ref").exists()  # the reference adapter is not an output


def test_dpo_full_method_changes_parameters(tmp_path: Path, tiny_llama3_dir: Path) -> None:
    cfg = load(dpo_cfg(tmp_path, tiny_llama3_dir, method={"name": "full"}), methods=METHOD_PARAMS)
    result = run_stage(cfg)
    before = load_file(str(tiny_llama3_dir / "model.safetensors"))
    after = load_file(str(result.output_dir / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_dpo_section_only_with_stage_dpo(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, dpo={"loss": "ipo"})
    with pytest.raises(ConfigError, match="section `dpo` applies to stage 'dpo'"):
        load(raw, methods=METHOD_PARAMS, stages=STAGES)


def test_dpo_bad_loss_and_smoothing_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"dpo\.loss"):
        load(dpo_cfg(tmp_path, tiny_model_dir, dpo={"loss": "kto"}), methods=METHOD_PARAMS)
    with pytest.raises(ConfigError, match="label_smoothing applies to loss 'robust'"):
        load(dpo_cfg(tmp_path, tiny_model_dir, dpo={"label_smoothing": 0.1}), methods=METHOD_PARAMS)
