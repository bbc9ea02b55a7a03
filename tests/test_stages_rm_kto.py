"""Two-step rm and kto runs on the tiny model: finite loss, parameters changed, artifacts written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.test_sft import make_cfg
from tests.test_stages_dpo import dpo_cfg, losses
from tuneforge.config import load
from tuneforge.methods import METHOD_PARAMS, MethodError
from tuneforge.stages import run_stage


def write_kto(path: Path, n: int = 12) -> Path:
    rows = [
        {
            "conversations": [
                {"from": "human", "value": f"What is {i} plus {i}?"},
                {"from": "gpt", "value": f"{i} plus {i} is {2 * i + i % 2}."},
            ],
            "label": i % 2 == 0,
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (path.parent / "dataset_info.json").write_text(
        json.dumps(
            {
                "kto_demo": {
                    "file_name": path.name,
                    "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "kto_tag": "label"},
                }
            }
        ),
        encoding="utf-8",
    )
    return path


def assert_artifacts(run: Path) -> None:
    seen = losses(run)
    assert seen and all(math.isfinite(x) for x in seen)
    assert (run / "config.yaml").is_file() and (run / "plots" / "loss.png").is_file()


def test_rm_lora_trains_adapter_and_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = dpo_cfg(tmp_path, tiny_model_dir, stage="rm")
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    assert result.steps == 2
    assert_artifacts(result.run_dir)
    weights = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert any("score" in k for k in weights)  # the head travels with the adapter
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())


def test_rm_full_method(tmp_path: Path, tiny_llama3_dir: Path) -> None:
    raw = dpo_cfg(tmp_path, tiny_llama3_dir, stage="rm", method={"name": "full"})
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    before = load_file(str(tiny_llama3_dir / "model.safetensors"))
    after = load_file(str(result.output_dir / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)


def test_rm_refuses_a_method_that_cannot_save_the_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = dpo_cfg(tmp_path, tiny_model_dir, stage="rm", method={"name": "ia3"})
    with pytest.raises(MethodError, match="stage rm trains a new 'score' head"):
        run_stage(load(raw, methods=METHOD_PARAMS))
    assert not (tmp_path / "runs" / "t").exists()


def test_kto_trains_two_steps(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "data").mkdir()
    path = write_kto(tmp_path / "data" / "kto.jsonl")
    data: dict[str, Any] = {"datasets": [{"name": "kto_demo"}], "dataset_dir": str(path.parent), "cutoff_len": 64}
    raw = make_cfg(tmp_path, tiny_model_dir, stage="kto", data=data, kto={"beta": 0.2})
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    assert result.steps == 2
    assert_artifacts(result.run_dir)
    weights = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
