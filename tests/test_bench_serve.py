"""The serving benchmark end to end on the tiny model: a real server process, real concurrent clients.

Only that it runs and reports is checked; its numbers are for docs/serve.md, never asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.bench import serve_bench

pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def test_the_serving_benchmark_reports_each_client_count(tiny_model_dir: Path, capsys) -> None:
    argv = ["--model", str(tiny_model_dir), "--clients", "1,3", "--requests", "3", "--max-tokens", "4"]
    assert serve_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "CPU: " in out and "command: python -m tuneforge.bench.serve_bench --model" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    assert len(rows) == 2 and all("| 3 |" in r for r in rows)  # 3 requests per level
