"""`tuneforge bench methods` on the tiny model: rows, columns, outputs, failed rows, the PSCP formula."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tuneforge.bench.methods import COLUMNS, BenchSettings, bench_methods, make_row
from tuneforge.bench.pscp import DEFAULT_PSCP, PscpConstants, pscp
from tuneforge.bench.worker import main as worker_main


def test_pscp_golden() -> None:
    c = PscpConstants(cp=1e6, cf=1e12, cm=1000.0, beta=0.5)
    # params = 3·Cp -> 4^-0.5 = 0.5; FLOPs = 0 -> 1; mem = 3·Cm -> 0.5: 0.8 · 0.5 · 1 · 0.5 = 0.2
    assert pscp(0.8, 3e6, 0.0, 3000.0, c) == pytest.approx(0.2)
    # β = 1: 0.9 / (1 + 1) / (1 + 3) / (1 + 0.5) = 0.075
    c1 = PscpConstants(cp=10.0, cf=1.0, cm=2.0, beta=1.0)
    assert pscp(0.9, 10, 3, 1.0, c1) == pytest.approx(0.075)
    assert pscp(0.0, 1, 1, 1) == 0.0


def test_make_row_computes_pscp_and_marks_failures() -> None:
    rec = {"score": 0.5, "trainable_params": 1e7, "total_params": 2e7, "peak_rss_mb": 2048.0, "flops_per_step": 1e12}
    row = make_row("lora", 1e-3, rec, DEFAULT_PSCP)
    assert row["status"] == "ok" and row["trainable_pct"] == 50.0
    assert row["pscp"] == pytest.approx(0.5 * 2**-1.5, abs=1e-4)
    bad = make_row("x", 1e-3, {"error": "RuntimeError: boom\nline 2"}, DEFAULT_PSCP)
    assert bad["status"] == "failed" and bad["pscp"] is None and "\n" not in bad["error"]
    assert set(row) == set(bad) == set(COLUMNS)


def test_worker_reports_an_error_instead_of_raising(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"config": {"name": "x", "model": {"path": str(tmp_path / "missing")}}}))
    assert worker_main([str(spec), str(tmp_path / "out.json")]) == 1
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["error"] and "peak_rss_process_mb" in record


def test_bench_methods_tiny(tiny_model_dir: Path, tmp_path: Path) -> None:
    s = BenchSettings(
        methods=["lora", "bitfit", "no_such_method"], model=str(tiny_model_dir), steps=2, score_items=2, threads=1
    )
    rows = bench_methods(s, tmp_path)
    by = {r["method"]: r for r in rows}
    for m in ("lora", "bitfit"):
        r = by[m]
        assert r["status"] == "ok", r["error"]
        assert r["steps"] == 2 and r["trainable_params"] > 0 and r["peak_rss_mb"] > 0
        assert r["flops_per_step"] > 0 and r["tokens_per_s"] and 0 <= r["score"] <= 1
        assert r["pscp"] is not None and r["pscp"] <= r["score"]
        assert (tmp_path / "runs" / m / "result.json").exists()  # a fresh run folder per method
    assert by["lora"]["trainable_params"] != by["bitfit"]["trainable_params"]
    assert by["no_such_method"]["status"] == "failed" and "no_such_method" in by["no_such_method"]["error"]

    with (tmp_path / "bench.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS and len(table) == 3
    md = (tmp_path / "bench.md").read_text()
    assert "PSCP" in md and "Cp=" in md and "| no_such_method | failed |" in md
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["settings"]["pscp_constants"] == DEFAULT_PSCP.as_dict()
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_cli_bench_parser() -> None:
    from tuneforge.cli import build_parser

    args = build_parser().parse_args(["bench", "methods", "train.lr=1e-4", "--methods", "lora,dora", "--steps", "3"])
    assert args.what == "methods" and args.methods == "lora,dora" and args.steps == 3
    assert args.overrides == ["train.lr=1e-4"] and args.func.__name__ == "cmd_bench"


def test_bench_methods_reads_its_settings_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneforge.bench import methods as bench
    from tuneforge.cli import main

    seen: list[BenchSettings] = []

    def fake_bench(s: BenchSettings, out: Path) -> list[dict]:
        seen.append(s)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.md").write_text("| method |\n")
        return [{"status": "ok"}]

    monkeypatch.setattr(bench, "bench_methods", fake_bench)
    words = ["bench", "methods", "bench.methods=lora,full", "train.max_steps=3", "method.r=4", "train.grad_accum=2"]
    assert main([*words, f"bench.out={tmp_path}", "--lr", "1e-2"]) == 0
    s = seen[-1]
    assert (list(s.methods), s.steps, s.lr, s.cutoff_len) == (["lora", "full"], 3, 1e-2, 128)
    assert (s.score_items, s.seed) == (40, 42)
    assert "--lr is now train.lr=0.01" in capsys.readouterr().err
    lora, full = (bench.base_config(s, m, tmp_path / "runs") for m in ("lora", "full"))
    assert lora["method"] == {"r": 4, "name": "lora"} and lora["train"]["grad_accum"] == 2
    assert (lora["train"]["lr"], full["train"]["lr"]) == (1e-2, pytest.approx(1e-3))  # full weights: lr / 10
    assert lora["train"]["lr_scheduler"] == "constant" and lora["data"]["datasets"] == [{"name": "iso_dates"}]
    # the old flags: every one names its key
    old = ["--methods", "lora", "--steps", "2", "--score-items", "5", "--out", str(tmp_path)]
    assert main(["bench", "methods", *old]) == 0
    s = seen[-1]
    assert (list(s.methods), s.steps, s.score_items) == (["lora"], 2, 5)
    err = capsys.readouterr().err
    assert '--methods is now bench.methods="lora"' in err and "--score-items is now eval.limit=5" in err
    # mistakes: an unknown key, a key the benchmark sets itself
    assert main(["bench", "methods", "bench.method=lora"]) == 2
    assert "did you mean 'methods'" in capsys.readouterr().err
    assert main(["bench", "methods", "data.datasets=[{name: identity}]"]) == 2
    assert "sets data.datasets itself" in capsys.readouterr().err
