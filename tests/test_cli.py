from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_sft import cfg_file, make_cfg
from tuneforge.cli import main


def test_train_then_chat_one_shot(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir))
    assert main(["train", str(path), "train.max_steps=1"]) == 0
    run = tmp_path / "runs" / "t"
    assert (run / "adapter" / "adapter_config.json").is_file()
    capsys.readouterr()
    args = ["chat", "--run", str(run), "--prompt", "What is 2 plus 2?", "--max-new-tokens", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    from tuneforge.data.schema import Message
    from tuneforge.inference import GenerationParams, LocalEngine
    from tuneforge.runs import model_config_of_run

    engine = LocalEngine(*model_config_of_run(run))
    expected = engine.generate([Message("user", "What is 2 plus 2?")], GenerationParams(max_new_tokens=5))
    assert out == expected + "\n"
    args = ["chat", "--model", str(tiny_model_dir), "--adapter", str(run / "adapter"), "--prompt", "hi"]
    assert main([*args, "--max-new-tokens", "3"]) == 0


def test_interactive_chat_reads_until_eof(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\nagain\n/exit\n"))
    assert main(["chat", "--model", str(tiny_model_dir), "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("bot> ") == 2 and "(history cleared)" in out


def test_config_typo_is_one_clear_line(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir))
    assert main(["train", str(path), "train.lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.lrr'" in err and "did you mean 'lr'" in err and "Traceback" not in err


def test_unknown_model_path_fails_before_training(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir, model={"path": str(tmp_path / "no-model")}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no-model" in err and "embedded" in err
    assert not (tmp_path / "runs" / "t").exists()


def test_bad_data_fails_before_the_run_folder_exists(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    raw = make_cfg(tmp_path, tiny_model_dir)
    raw["data"]["datasets"] = [{"path": str(bad), "format": "alpaca"}]
    assert main(["train", str(cfg_file(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "2" in err
    assert not (tmp_path / "runs" / "t").exists()


def test_validate_prints_resolved_config(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir))
    assert main(["validate", str(path), "method.r=2"]) == 0
    out = capsys.readouterr().out
    assert "r: 2" in out and "cutoff_len: 64" in out


def test_doctor_reports_versions_and_model_cache(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for word in ("torch", "transformers", "peft", "threads", "embedded model", "optional extras"):
        assert word in out


@pytest.mark.parametrize("method", ["series_adapter", "bitfit", "full"])
def test_chat_loads_every_kind_of_trained_output(tmp_path: Path, tiny_model_dir: Path, method: str, capsys) -> None:
    """Native adapters and full models load for chat through the method table, not only PEFT folders."""
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir, method={"name": method}))
    assert main(["train", str(path), "train.max_steps=1"]) == 0
    capsys.readouterr()
    assert main(["chat", "--run", str(tmp_path / "runs" / "t"), "--prompt", "hi", "--max-new-tokens", "3"]) == 0


def test_data_preview_shows_the_rendered_samples_with_trained_spans(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir))
    assert main(["data", "preview", str(path), "data.cutoff_len=64", "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "data.cutoff_len=64" in out and "«" in out and "»" in out  # the answer is marked as trained
    assert main(["data", "preview", "--n", "1"]) == 2  # no config: a clear error
    assert "needs one CONFIG" in capsys.readouterr().err
