from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.test_sft import cfg_file, make_cfg
from tuneforge.cli import load_config, main
from tuneforge.export.logprob_check import compare
from tuneforge.export.run import ExportError, ExportResult, export_run, format_table, gguf_converter
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
    monkeypatch.setenv("TUNEFORGE_LLAMA_CPP", str(tmp_path))  # no fetched convert_hf_to_gguf.py either
    with pytest.raises(ExportError, match=r"python -m tuneforge\.export\.gguf_lora --fetch"):
        export_run(tmp_path / "no-run", fmt="gguf")


def test_gguf_converter_order(tmp_path: Path, monkeypatch) -> None:
    """TUNEFORGE_GGUF_CONVERTER, then convert-hf-to-gguf on PATH, then the fetched script run by this Python."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TUNEFORGE_LLAMA_CPP", str(tmp_path))
    (tmp_path / "convert_hf_to_gguf.py").write_text("", encoding="utf-8")
    monkeypatch.delenv("TUNEFORGE_GGUF_CONVERTER", raising=False)
    assert gguf_converter() == [sys.executable, str(tmp_path / "convert_hf_to_gguf.py")]
    exe = tmp_path / "convert-hf-to-gguf"
    exe.write_text("#!/bin/sh\n", encoding="utf-8")
    exe.chmod(0o755)
    assert gguf_converter() == [str(exe)]
    monkeypatch.setenv("TUNEFORGE_GGUF_CONVERTER", "/opt/conv/bin/convert-hf-to-gguf")
    assert gguf_converter() == ["/opt/conv/bin/convert-hf-to-gguf"]


def test_verify_table_has_kl_and_says_when_llama_cpp_did_not_run(tmp_path: Path) -> None:
    a = torch.log_softmax(torch.tensor([2.0, 1.0, 0.0]), dim=-1)
    b = torch.log_softmax(torch.tensor([2.0, 1.0, 0.5]), dim=-1)
    rows = compare([a, a, a, b], [a, b, b, b])
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7) and rows[1]["kl"] > 1e-3
    assert rows[1]["kl"] == pytest.approx(float((a.exp() * (a - b)).sum()))
    result = ExportResult(tmp_path, rows=rows, llama_note="not run in llama.cpp: llama-cpp-python is not installed")
    text = format_table(result)
    assert "KL (nats)" in text and "llama.cpp: not run" in text
    result.llama_rows = [dict(r, same_tokens=i != 2) for i, r in enumerate(rows)]
    result.llama_note = "model-f16.gguf in llama.cpp (llama-cpp-python 0.3.x)"
    text = format_table(result)
    assert "model-f16.gguf in llama.cpp" in text and "same token ids" in text and "**3/4**" in text
    with pytest.raises(ValueError, match="vocabulary"):
        compare([a], [torch.zeros(5)])


def test_cli_export_choices_are_the_export_formats() -> None:
    # The parser keeps literal choices (building it must not import torch); they must follow the export table.
    from tuneforge.cli import build_parser
    from tuneforge.export.run import FORMATS, GGUF_TYPES

    export = build_parser()._subparsers._group_actions[0].choices["export"]  # type: ignore[union-attr]
    options = {a.dest: a.choices for a in export._actions}
    assert tuple(options["format"]) == FORMATS
    assert tuple(options["gguf_type"]) == GGUF_TYPES
