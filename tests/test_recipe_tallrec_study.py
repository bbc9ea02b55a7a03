"""bench/tallrec_study.sh on a tiny model (two arms, resumed per arm after a simulated interruption) and the table
it writes (tuneforge.bench.tallrec_table): the intervals are eval.stats' own, the pairing refuses other items."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_recipe_tallrec import write_tallrec
from tuneforge.bench.tallrec_table import combine, read_evaluated
from tuneforge.eval import EvalError
from tuneforge.eval.metrics import auc_rows
from tuneforge.eval.stats import bootstrap, paired_bootstrap, resample_indices

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "tallrec_study.sh"


def tiny_recipe(tmp_path: Path, model_dir: Path) -> Path:
    book = write_tallrec(tmp_path / "data" / "book", n_valid=40, n_test=16, seed=3)
    movie = write_tallrec(tmp_path / "data" / "movie", n_valid=4, n_test=12, seed=4)
    raw: dict[str, Any] = {
        "name": "tallrec-book",
        "stage": "sft",
        "model": {"path": str(model_dir)},
        "data": {"datasets": [{"path": str(book / "valid.json"), "format": "tallrec"}], "mix_size": 8,
                 "cutoff_len": 256},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "save_steps": 1, "threads": 1},
        "eval": {"bootstrap": 100, "batch_size": 4, "tasks": [
            {"name": "book_test", "type": "tallrec", "format": "tallrec", "path": str(book), "split": "test"},
            {"name": "movie_test", "type": "tallrec", "format": "tallrec", "path": str(movie), "split": "test"},
        ]},
    }  # fmt: skip
    path = tmp_path / "tallrec.yaml"
    path.write_text("# tuneforge train tallrec.yaml\n" + yaml.safe_dump(raw), encoding="utf-8")
    return path


def study(tmp_path: Path, recipe: Path, out: Path, arms: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ARMS": arms,
        "RECIPE": str(recipe),
        "TUNEFORGE": f"{sys.executable} -m tuneforge.cli",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def without_times(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if k != "eval_s"}


def test_study_trains_scores_tables_and_resumes_per_arm(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe, out = tiny_recipe(tmp_path, tiny_model_dir), tmp_path / "study"
    study(tmp_path, recipe, out, "4")
    stats = json.loads((out / "runs" / "tallrec-book-4" / "data_stats.json").read_text())
    assert stats["train"] == 4
    table = json.loads((out / "tallrec.json").read_text())
    assert [m["label"] for m in table["models"]] == ["base", "tallrec-book-4"]
    assert [m.get("samples") for m in table["models"]] == [None, 4]
    assert [t["name"] for t in table["tasks"]] == ["book_test", "movie_test"]
    md = (out / "tallrec.md").read_text()
    assert "| movie_test | tallrec-book-4 | 12 |" in md and "| tallrec-book-4 | 4 | 2 |" in md
    # the base's interval is its own report's: the same resamples
    base_report = json.loads((out / "eval" / "base" / "report.json").read_text())
    assert table["tasks"][0]["scores"]["base"]["auc"] == base_report["tasks"][0]["scores"]["base"]["auc"]
    before = without_times(table["tasks"][1]["scores"]["tallrec-book-4"])

    # interrupted: the arm lost its result and its report, a half-written report folder is left behind
    (out / "runs" / "tallrec-book-4" / "result.json").unlink()
    shutil.rmtree(out / "eval" / "tallrec-book-4")
    (out / "eval" / "tallrec-book-4.partial").mkdir()
    log = study(tmp_path, recipe, out, "4").stdout
    assert "arm 4: resuming from" in log and "base: scored already" in log and "tallrec-book-4: scoring" in log
    assert not (out / "eval" / "tallrec-book-4.partial").exists()
    after = json.loads((out / "tallrec.json").read_text())["tasks"][1]["scores"]["tallrec-book-4"]
    assert without_times(after) == before  # resumed at its last step: the same adapter, the same numbers

    log = study(tmp_path, recipe, out, "4").stdout  # all done: nothing is trained or scored again
    assert "arm 4: trained already" in log and "tallrec-book-4: scored already" in log and ": training" not in log


def _fake(folder: Path, label: str, ids: list[str], gold: list[str], p_yes: list[float]) -> Path:
    (folder / "predictions" / label).mkdir(parents=True)
    rows = [{"id": i, "gold": g, "p_yes": p} for i, g, p in zip(ids, gold, p_yes, strict=True)]
    (folder / "predictions" / label / "book_test.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    report = {"seed": 7, "bootstrap": 200, "limit": None, "models": [{"label": label, "adapter": None}],
              "tasks": [{"name": "book_test", "type": "tallrec", "n": len(ids), "seconds": {label: 1.0}}]}  # fmt: skip
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_table_intervals_are_the_eval_statistics(tmp_path: Path) -> None:
    ids, gold = [str(i) for i in range(8)], ["Yes", "No"] * 4
    base_p, arm_p = [0.5, 0.6, 0.4, 0.5, 0.7, 0.2, 0.3, 0.6], [0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.35, 0.4]
    base = read_evaluated(_fake(tmp_path / "base", "base", ids, gold, base_p))
    arm = read_evaluated(_fake(tmp_path / "arm", "tallrec-book-16", ids, gold, arm_p))
    table = combine([arm, base])
    assert [m["label"] for m in table["models"]] == ["base", "tallrec-book-16"]
    idx = resample_indices(8, 200, 7)  # seed + task index 0
    y = [int(g == "Yes") for g in gold]
    want_base, want_arm = bootstrap(auc_rows(base_p, y), idx), bootstrap(auc_rows(arm_p, y), idx)
    diff = paired_bootstrap(auc_rows(base_p, y), auc_rows(arm_p, y), idx)
    got = table["tasks"][0]["scores"]
    assert got["base"]["auc"]["value"] == pytest.approx(want_base.value)
    assert got["tallrec-book-16"]["auc"]["ci95_low"] == pytest.approx(want_arm.low, abs=1e-6)
    assert got["tallrec-book-16"]["auc_minus_base"]["value"] == pytest.approx(diff.value, abs=1e-6)
    assert got["tallrec-book-16"]["auc_minus_base"]["ci95_high"] == pytest.approx(diff.high, abs=1e-6)
    # Yes items 0.9, 0.8, 0.7, 0.35 against No items 0.1, 0.3, 0.2, 0.4: only 0.35 < 0.4 of the 16 pairs is wrong
    assert got["tallrec-book-16"]["auc"]["value"] == pytest.approx(15 / 16)


def test_table_refuses_what_cannot_be_paired(tmp_path: Path) -> None:
    ids, gold = ["0", "1", "2", "3"], ["Yes", "No", "Yes", "No"]
    base = read_evaluated(_fake(tmp_path / "base", "base", ids, gold, [0.1, 0.2, 0.3, 0.4]))
    other = read_evaluated(_fake(tmp_path / "arm", "tallrec-book-16", ["0", "1", "2", "9"], gold, [0.1] * 4))
    with pytest.raises(EvalError, match=r"arm: task 'book_test' scored other items than .*base; pairing needs"):
        combine([base, other])
    with pytest.raises(EvalError, match=r"exactly one 'base' report, found 0"):
        combine([other])
    broken = _fake(tmp_path / "broken", "x", ids, gold, [0.1] * 4)
    lines = (broken / "predictions" / "x" / "book_test.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"id": "2", "gold": "Maybe", "p_yes": 0.3})
    (broken / "predictions" / "x" / "book_test.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalError, match=r"book_test\.jsonl: line 3 lacks p_yes or a Yes/No gold"):
        read_evaluated(broken)
    with pytest.raises(EvalError, match=r"report\.json is missing"):
        read_evaluated(tmp_path / "nowhere")
