"""llama.cpp runs in a child process: a crash there (SIGILL from a build for another CPU) is a reported failure.

llama-cpp-python is not installed here; the child's entry point is replaced by functions of this module (the
spawned interpreter imports them by name), which die by a signal, raise, or answer as llama.cpp would.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tuneforge.export import llamacpp
from tuneforge.export.logprob_check import compare, verify_prompts
from tuneforge.export.run import ExportResult, check_in_llama_cpp, write_report

VOCAB = 16


def die_by_sigill(conn: Any, *args: Any) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from the test
    os.kill(os.getpid(), signal.SIGILL)


def raise_error(conn: Any, *args: Any) -> None:
    conn.send(("error", "ValueError: Failed to load model from file", None))
    conn.close()


def answer(conn: Any, gguf: str, lora: str | None, prompts: list[list[int]], texts: list[str], threads: int) -> None:
    logprobs = [np.log(np.full(VOCAB, 1.0 / VOCAB, dtype=np.float32)) for _ in prompts]
    conn.send(("ok", logprobs, [True] * len(prompts)))
    conn.close()


def test_a_child_that_dies_by_sigill_is_reported_with_the_signal_and_the_rebuild_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(llamacpp, "CHILD_ENTRY", die_by_sigill)
    with pytest.raises(llamacpp.LlamaCppCrashed, match="died with SIGILL") as caught:
        llamacpp.score_in_child(tmp_path / "m.gguf", None, [[1, 2]], ["ab"], timeout_s=60)
    assert "-DGGML_NATIVE=OFF" in str(caught.value) and "m.gguf" in str(caught.value)


def test_an_error_in_the_child_comes_back_as_its_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(llamacpp, "CHILD_ENTRY", raise_error)
    with pytest.raises(RuntimeError, match="Failed to load model"):
        llamacpp.score_in_child(tmp_path / "m.gguf", None, [[1, 2]], ["ab"], timeout_s=60)


def test_the_childs_answer_is_log_probabilities_per_prompt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(llamacpp, "CHILD_ENTRY", answer)
    logprobs, same = llamacpp.score_in_child(tmp_path / "m.gguf", None, [[1, 2], [3]], ["ab", "c"], timeout_s=60)
    assert same == [True, True]
    assert [t.shape for t in logprobs] == [torch.Size([VOCAB])] * 2
    torch.testing.assert_close(logprobs[0].exp().sum(), torch.tensor(1.0))


def test_a_crash_in_llama_cpp_leaves_the_export_and_its_file_and_says_so_in_verify_md(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, chatml_tokenizer: Any
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF written by the export")
    prompts = verify_prompts(chatml_tokenizer)
    source = [torch.log_softmax(torch.randn(VOCAB), -1) for _ in prompts]
    result = ExportResult(tmp_path, rows=compare(source, source), gguf=gguf)
    monkeypatch.setattr(llamacpp, "available", lambda: True)
    monkeypatch.setattr(llamacpp, "version", lambda: "0.0 (test)")
    monkeypatch.setattr(llamacpp, "CHILD_ENTRY", die_by_sigill)
    check_in_llama_cpp(result, source, prompts, chatml_tokenizer, gguf)  # returns: the export goes on
    assert "SIGILL" in result.llama_note and not result.llama_rows
    write_report(result, tmp_path)
    verify = (tmp_path / "verify.md").read_text(encoding="utf-8")
    assert "llama.cpp: llama.cpp could not run model.gguf: LlamaCppCrashed: llama.cpp died with SIGILL" in verify
    assert gguf.read_bytes() == b"GGUF written by the export"


def test_a_working_child_fills_the_llama_cpp_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, chatml_tokenizer: Any
) -> None:
    prompts = verify_prompts(chatml_tokenizer)
    source = [torch.log_softmax(torch.zeros(VOCAB), -1) for _ in prompts]
    result = ExportResult(tmp_path, rows=compare(source, source))
    monkeypatch.setattr(llamacpp, "available", lambda: True)
    monkeypatch.setattr(llamacpp, "version", lambda: "0.0 (test)")
    monkeypatch.setattr(llamacpp, "CHILD_ENTRY", answer)
    check_in_llama_cpp(result, source, prompts, chatml_tokenizer, tmp_path / "model.gguf")
    assert len(result.llama_rows) == len(prompts)
    assert all(r["same_tokens"] and r["max_abs_diff"] < 1e-6 for r in result.llama_rows)
