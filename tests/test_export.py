from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_sft import cfg_file, make_cfg
from tuneforge.cli import load_config, main
from tuneforge.export import ExportError, export_run
from tuneforge.stages import run_stage


def train(tmp_path: Path, model_dir: Path, method: dict, name: str = "t") -> Path:
    raw = make_cfg(tmp_path, model_dir, method=method, name=name)
    raw["train"]["max_steps"] = 1
    return run_stage(load_config(cfg_file(tmp_path, raw), [])).run_dir


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "alpha": 8}, {"name": "ia3"}, {"name": "full"}])
def test_export_reloads_with_the_same_logprobs(tmp_path: Path, tiny_model_dir: Path, method: dict) -> None:
    run = train(tmp_path, tiny_model_dir, method)
    result = export_run(run)
    assert result.out_dir == run / "merged"
    for f in ("model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json", "verify.md"):
        assert (result.out_dir / f).is_file(), f
    assert (result.out_dir / "chat_template.jinja").is_file()
    assert result.max_abs_diff < 1e-4
    assert result.top1_agreement == 1.0


def test_export_refuses_unmergeable_and_overwrite(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    run = train(tmp_path, tiny_model_dir, {"name": "prompt_tuning"}, name="p")
    with pytest.raises(ExportError, match="not mergeable"):
        export_run(run)
    lora = train(tmp_path, tiny_model_dir, {"name": "lora", "r": 4}, name="l")
    assert main(["export", "--run", str(lora)]) == 0
    out = capsys.readouterr().out
    assert "max abs diff" in out and "100%" in out
    assert main(["export", "--run", str(lora)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--run", str(lora), "--out", str(tmp_path / "m2")]) == 0
    assert main(["export", "--run", str(lora), "--overwrite"]) == 0


def test_gguf_without_converter_fails_before_loading(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TUNEFORGE_GGUF_CONVERTER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExportError, match="TUNEFORGE_GGUF_CONVERTER"):
        export_run(tmp_path / "no-run", fmt="gguf")
