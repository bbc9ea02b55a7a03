"""Two-step continued pre-training on the tiny model: packed blocks, perplexity before/after, artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import Dataset

from tests.test_sft import make_cfg
from tests.test_stages_dpo import losses
from tuneforge.config import load
from tuneforge.data.schema import DataError
from tuneforge.methods import METHOD_PARAMS
from tuneforge.stages import run_stage
from tuneforge.stages.pt import pack_blocks


def test_pack_blocks_concatenates_and_drops_the_remainder() -> None:
    ds = Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]]})
    out = pack_blocks(ds, 4)
    assert out["input_ids"] == [[1, 2, 3, 4], [5, 6, 7, 8]] and out["labels"] == out["input_ids"]
    with pytest.raises(DataError, match=r"fewer than one block of data\.cutoff_len=64"):
        pack_blocks(ds, 64)


def test_pt_two_steps_with_perplexity(tmp_path: Path, tiny_model_dir: Path) -> None:
    lines = [
        f"The quick brown fox jumps over the lazy dog {i} times. The capital of France is Paris." for i in range(40)
    ]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = {"datasets": [{"path": str(corpus)}], "cutoff_len": 32, "val_size": 0.2}
    raw = make_cfg(tmp_path, tiny_model_dir, stage="pt", data=data)
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    run = result.run_dir
    assert result.steps == 2
    assert all(math.isfinite(x) for x in losses(run))
    assert (run / "config.yaml").is_file() and (run / "plots" / "loss.png").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    ppl = json.loads((run / "pt_perplexity.json").read_text())
    assert math.isfinite(ppl["perplexity_before"]) and math.isfinite(ppl["perplexity_after"])
    assert ppl["perplexity_after"] != ppl["perplexity_before"]  # the adapter changed the model
