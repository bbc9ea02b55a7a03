"""The real embedded model: two LoRA steps on the shipped quickstart data (marked slow; CI runs it)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tuneforge.cli import load_config
from tuneforge.inference import GenerationParams, LocalEngine
from tuneforge.quickstart import QUICKSTART_CONFIG
from tuneforge.stages import run_stage

pytestmark = pytest.mark.slow


def test_two_lora_steps_on_the_embedded_model(tmp_path: Path) -> None:
    overrides = [f"output.dir={tmp_path}", "train.max_steps=2", "train.save_steps=0", "data.mix_size=16"]
    cfg = load_config(QUICKSTART_CONFIG, overrides)
    result = run_stage(cfg)
    assert result.steps == 2
    assert result.train_loss is not None and math.isfinite(result.train_loss)
    assert result.tokens_per_s and result.tokens_per_s > 0
    assert (result.output_dir / "adapter_model.safetensors").is_file()
    engine = LocalEngine(cfg.model, result.output_dir)
    from tuneforge.data.schema import Message

    reply = engine.generate([Message("user", "Convert this date to ISO 8601: 3 May 2001")], GenerationParams(8))
    assert isinstance(reply, str) and reply
