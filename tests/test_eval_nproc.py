"""`tuneforge eval CONFIG --nproc 2`: each process answers a shard of every task, rank 0 writes the one report,
and its scores and predictions are those of the one-process report; bad launch flags are clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_distributed_runs import tuneforge
from tests.test_eval_readers import write_layouts
from tuneforge.cli import main
from tuneforge.config import load
from tuneforge.eval import evaluate


def tasks(p: dict[str, Path]) -> list[dict[str, Any]]:
    return [
        {"type": "multiple_choice", "format": "llm_adapters", "path": str(p["arc"]), "name": "arc"},
        {"type": "classification", "format": "tsv", "path": str(p["sst2"]), "labels": ["negative", "positive"]},
        {"type": "generation", "format": "alpaca", "path": str(p["gen"]), "max_new_tokens": 4},
        {"type": "perplexity", "format": "text", "path": str(p["text"]), "max_length": 16},
    ]


def same(a: Any, b: Any, where: str = "") -> None:
    """Equal reports: the same keys, strings and counts; floats equal up to summation order."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not (math.isnan(a) and math.isnan(b)):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-9), where
    else:
        assert a == b, where


@pytest.mark.slow  # three process starts (launcher + 2 workers) and a one-process reference
def test_eval_on_two_processes_writes_the_one_process_report(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = {"name": "ev", "model": {"path": str(tiny_model_dir)}, "output": {"dir": str(tmp_path / "runs")},
           "eval": {"tasks": tasks(write_layouts(tmp_path / "data")), "bootstrap": 50, "batch_size": 2}}  # fmt: skip
    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    evaluate(load(raw), output_dir=tmp_path / "one", progress=False)
    done = tuneforge("eval", str(path), "--output", str(tmp_path / "two"), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| task | n | metric |") == 1  # rank 0 alone prints the report
    assert "evaluating on 2 processes" in done.stderr
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    for t in one["tasks"] + two["tasks"]:
        t.pop("seconds")
    same(two, one)
    assert [t["n"] for t in two["tasks"]] == [t["n"] for t in one["tasks"]] and two["tasks"][0]["n"] >= 3
    for f in sorted((tmp_path / "one" / "predictions" / "base").glob("*.jsonl")):
        rows = [
            [json.loads(line) for line in (d / "predictions" / "base" / f.name).open()]
            for d in (tmp_path / "one", tmp_path / "two")
        ]
        same(rows[1], rows[0], f.name)


def test_eval_launch_flags_bad_input_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    raw = {"name": "ev", "model": {"path": str(tiny_model_dir)}, "output": {"dir": str(tmp_path / "runs")},
           "eval": {"tasks": tasks(write_layouts(tmp_path / "data"))[:1]}}  # fmt: skip
    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["eval", str(path), "--nproc", "0"]) == 2
    assert "--nproc 0: give the number of processes per machine, 1 or more" in capsys.readouterr().err
    assert main(["eval", str(path), "--nproc", "2", "--nnodes", "2"]) == 2
    assert "--nnodes 2: every machine needs --master ADDR:PORT" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
