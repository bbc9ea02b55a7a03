"""Errors a user can fix: one line and exit 2; anything else a traceback and exit 1; no noise a user cannot act on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tuneforge import cli
from tuneforge.cli import verbs
from tuneforge.data.schema import DataError
from tuneforge.data.sources import read_jsonl, read_records
from tuneforge.errors import TuneforgeError
from tuneforge.utils.logs import setup_logging


def _verb_raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def boom(args: object) -> int:
        raise error

    monkeypatch.setattr(verbs, "cmd_doctor", boom)


def test_user_error_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _verb_raising(monkeypatch, DataError("data.jsonl:3: column 'output' is missing"))
    assert cli.main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err == "error: data.jsonl:3: column 'output' is missing\n"


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A ValueError from deep inside a library is a bug: it propagates (Python prints the traceback, exit 1).
    _verb_raising(monkeypatch, ValueError("shapes (3,4) and (5,6) not aligned"))
    with pytest.raises(ValueError, match="not aligned"):
        cli.main(["doctor"])


def test_every_package_error_is_a_tuneforge_error() -> None:
    from tuneforge.config import ConfigError
    from tuneforge.eval.readers import EvalError
    from tuneforge.export.gguf_lora import LoraGgufError
    from tuneforge.export.logprob_check import CheckError
    from tuneforge.export.modelfile import TemplateError
    from tuneforge.export.run import ExportError
    from tuneforge.inference import EngineError
    from tuneforge.methods import MethodError
    from tuneforge.models import ModelError
    from tuneforge.rag.index import RagError
    from tuneforge.runs import RunExistsError, RunFolderError

    for cls in (
        ConfigError,
        DataError,
        EvalError,
        ExportError,
        LoraGgufError,
        CheckError,
        TemplateError,
        EngineError,
        MethodError,
        ModelError,
        RagError,
        RunExistsError,
        RunFolderError,
    ):
        assert issubclass(cls, TuneforgeError), cls


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".txt"])
def test_binary_data_file_names_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"blob{suffix}"
    path.write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(DataError, match=rf"blob\{suffix}: not UTF-8 text \(byte b'\\x..' at offset \d+\)"):
        list(read_records(path))


def test_read_jsonl_alone_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\n')
    with pytest.raises(DataError, match=r"chats\.jsonl: not UTF-8 text"):
        list(read_jsonl(path))


def test_unactionable_library_warning_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    setup_logging(False)
    ops = logging.getLogger("bitsandbytes.backends.cpu.ops")  # where bitsandbytes logs it from
    with caplog.at_level(logging.WARNING):
        ops.warning("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'.")
        ops.warning("a warning a user can act on")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["a warning a user can act on"]
    deepspeed = logging.getLogger("DeepSpeed")
    with caplog.at_level(logging.WARNING, logger="DeepSpeed"):
        deepspeed.warning(
            "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
        )
    assert not [r for r in caplog.records if "accelerator" in r.getMessage()]
