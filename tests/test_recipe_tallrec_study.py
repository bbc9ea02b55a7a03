"""bench/tallrec_study.sh and the table it writes (tuneforge.bench.tallrec_table).

The script's branching (skip, resume, restart, a half-written report, the arguments of every command, scoring an
arm again after it was trained again) runs against a stub `tuneforge` (TUNEFORGE=...) that logs its argv and
writes the files the real one would: seconds, not minutes. The real path replays the argv the script gave,
in process, on a tiny model: one 2-step run, the base's and the arm's eval reports, and the table combined from
them. The table's own statistics are tested on hand-made report folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.test_recipe_tallrec import write_tallrec
from tuneforge.bench import tallrec_table
from tuneforge.bench.tallrec_table import combine, read_evaluated
from tuneforge.cli import main as tuneforge_main
from tuneforge.eval import EvalError
from tuneforge.eval.metrics import auc_rows
from tuneforge.eval.stats import bootstrap, paired_bootstrap, resample_indices

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "tallrec_study.sh"
RECORD = "scored-result.sha256"

# The stub `tuneforge` (and `python` for the table step), in bash to start in milliseconds: logs its argv as one
# line (words ended by \x1f) to $STUB_LOG, then writes what the real command would. train: refuses an existing
# run without train.resume / output.overwrite (as `tuneforge train` does), writes checkpoints/checkpoint-2 and
# a result.json unique to this training; the run named in $STUB_FAIL stops after its first checkpoint. eval:
# writes --output/report.json holding the result.json it scored; the --run named in $STUB_FAIL_EVAL fails
# half-way (its folder made, no report.json).
STUB = r"""#!/usr/bin/env bash
set -eu
{ printf '%s\x1f' "$@"; echo; } >>"$STUB_LOG"
name= dir= how= run= out= prev=
for w in "$@"; do
  case $w in
  name=*) name=${w#name=} ;;
  output.dir=*) dir=${w#output.dir=} ;;
  train.resume=* | output.overwrite=*) how=$w ;;
  esac
  case $prev in --run) run=$w ;; --output) out=$w ;; esac
  prev=$w
done
case $1 in
train)
  r=$dir/$name
  if [ -e "$r" ] && [ -z "$how" ]; then echo "error: $r exists" >&2; exit 2; fi
  if [ "$how" = output.overwrite=true ]; then rm -rf "$r"; fi
  mkdir -p "$r/checkpoints/checkpoint-1"
  if [ "$name" = "${STUB_FAIL:-}" ]; then echo interrupted >&2; exit 1; fi
  mkdir -p "$r/checkpoints/checkpoint-2"
  echo "{\"steps\": 2, \"trained\": \"$(date +%s%N)-$RANDOM\"}" >"$r/result.json" ;;
eval)
  mkdir "$out"
  if [ -n "$run" ] && [ "${run##*/}" = "${STUB_FAIL_EVAL:-}" ]; then echo "eval failed" >&2; exit 1; fi
  scored=null
  if [ -n "$run" ]; then scored=$(cat "$run/result.json"); fi
  echo "{\"scored\": $scored}" >"$out/report.json" ;;
esac
"""


def stub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    stub, python = tmp_path / "tuneforge-stub", tmp_path / "python-stub"
    stub.write_text(STUB, encoding="utf-8")
    python.write_text(f'#!/bin/sh\nexec {stub} table "$@"\n', encoding="utf-8")
    for path in (stub, python):
        path.chmod(0o755)
    return {
        **os.environ,
        "TUNEFORGE": str(stub),
        "PYTHON": str(python),
        "STUB_LOG": str(tmp_path / "calls.log"),
        "RECIPE": "recipe.yaml",
        **extra,
    }


def run_script(
    tmp_path: Path, out: Path, *words: str, arms: str = "4 8", ok: bool = True, **env: str
) -> tuple[str, list[list[str]]]:
    """Run the script; its log and the stubs' calls (this run's only)."""
    calls = tmp_path / "calls.log"
    calls.unlink(missing_ok=True)
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out), *words],
        cwd=tmp_path,
        env=stub_env(tmp_path, ARMS=arms, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    lines = calls.read_text().splitlines() if calls.exists() else []
    return done.stdout + done.stderr, [line.split("\x1f")[:-1] for line in lines]


def scored_its_result(out: Path, arm: str) -> bool:
    """Whether the arm's report folder records the sha256 of its run's result.json as it is now."""
    result = hashlib.sha256((out / "runs" / arm / "result.json").read_bytes()).hexdigest()
    return (out / "eval" / arm / RECORD).read_text().strip() == result


def verbs(calls: list[list[str]]) -> list[tuple[str, ...]]:
    """(verb, the model it is about) of each call, in order."""
    out: list[tuple[str, ...]] = []
    for c in calls:
        name = next((w.split("=", 1)[1] for w in c if w.startswith("name=")), None)
        run = Path(c[c.index("--run") + 1]).name if "--run" in c else None
        out.append((c[0], run or name or ""))
    return out


def test_a_fresh_study_gives_every_command_its_arguments(tmp_path: Path) -> None:
    out = tmp_path / "study"
    log, calls = run_script(tmp_path, out, "train.threads=1", "eval.limit=3")
    runs, ev = out / "runs", out / "eval"
    assert calls == [
        ["train", "recipe.yaml", "name=tallrec-book-4", "data.mix_size=4", f"output.dir={runs}",
         "train.threads=1", "eval.limit=3"],
        ["train", "recipe.yaml", "name=tallrec-book-8", "data.mix_size=8", f"output.dir={runs}",
         "train.threads=1", "eval.limit=3"],
        ["eval", "recipe.yaml", "name=tallrec-study-base", f"output.dir={runs}", "train.threads=1", "eval.limit=3",
         "--output", f"{ev}/base.partial"],
        ["eval", "recipe.yaml", "eval.base=false", f"output.dir={runs}", "train.threads=1", "eval.limit=3",
         "--run", f"{runs}/tallrec-book-4", "--output", f"{ev}/tallrec-book-4.partial"],
        ["eval", "recipe.yaml", "eval.base=false", f"output.dir={runs}", "train.threads=1", "eval.limit=3",
         "--run", f"{runs}/tallrec-book-8", "--output", f"{ev}/tallrec-book-8.partial"],
        ["table", "-m", "tuneforge.bench.tallrec_table", str(out)],
    ]  # fmt: skip
    assert sorted(p.name for p in ev.iterdir()) == ["base", "tallrec-book-4", "tallrec-book-8"]  # no .partial
    assert scored_its_result(out, "tallrec-book-4") and scored_its_result(out, "tallrec-book-8")
    assert not (ev / "base" / RECORD).exists()  # the base has no run
    assert "arm 4: training tallrec-book-4 on 4 book samples" in log
    assert "overrides: train.threads=1 eval.limit=3" in log

    log, calls = run_script(tmp_path, out, "train.threads=1", "eval.limit=3")  # all done: only the table again
    assert verbs(calls) == [("table", "")]
    assert "arm 4: trained already" in log and "tallrec-book-8: scored already" in log and "base: scored already" in log


def test_an_interrupted_arm_resumes_and_is_scored_again(tmp_path: Path) -> None:
    out = tmp_path / "study"
    log, calls = run_script(tmp_path, out, ok=False, STUB_FAIL="tallrec-book-8")  # stops after checkpoint-1
    assert verbs(calls) == [("train", "tallrec-book-4"), ("train", "tallrec-book-8")]
    assert "FAILED: training arm 8" in log and "interrupted" in log  # the log's tail
    log, calls = run_script(tmp_path, out)
    assert calls[0] == ["train", "recipe.yaml", "name=tallrec-book-8", "data.mix_size=8",
                        f"output.dir={out / 'runs'}", "train.resume=true"]  # fmt: skip
    assert "arm 4: trained already" in log and "arm 8: resuming from" in log and "checkpoint-1" in log
    assert verbs(calls)[1:] == [("eval", "tallrec-study-base"), ("eval", "tallrec-book-4"), ("eval", "tallrec-book-8"),
                                ("table", "")]  # fmt: skip


def test_a_run_without_checkpoint_restarts(tmp_path: Path) -> None:
    out = tmp_path / "study"
    (out / "runs" / "tallrec-book-4").mkdir(parents=True)  # e.g. stopped while reading its data
    log, calls = run_script(tmp_path, out, arms="4")
    assert calls[0] == ["train", "recipe.yaml", "name=tallrec-book-4", "data.mix_size=4",
                        f"output.dir={out / 'runs'}", "output.overwrite=true"]  # fmt: skip
    assert "has no checkpoint, restarting it" in log


def test_a_half_written_report_is_redone_and_a_failed_one_left_unfinished(tmp_path: Path) -> None:
    out = tmp_path / "study"
    run_script(tmp_path, out, arms="4")
    ev = out / "eval"
    shutil.rmtree(ev / "base")
    (ev / "base.partial").mkdir()
    (ev / "base.partial" / "junk").write_text("from an interrupted eval")
    log, calls = run_script(tmp_path, out, arms="4")
    assert verbs(calls) == [("eval", "tallrec-study-base"), ("table", "")]
    assert (ev / "base" / "report.json").is_file() and not (ev / "base" / "junk").exists()
    assert not (ev / "base.partial").exists()

    shutil.rmtree(out / "runs" / "tallrec-book-4")  # trained again, and its scoring fails
    log, calls = run_script(tmp_path, out, arms="4", ok=False, STUB_FAIL_EVAL="tallrec-book-4")
    assert "FAILED: scoring tallrec-book-4" in log and (ev / "tallrec-book-4.partial").is_dir()
    log, calls = run_script(tmp_path, out, arms="4")  # the old report is not taken for the new run's
    assert verbs(calls) == [("eval", "tallrec-book-4"), ("table", "")] and "scoring it again" in log
    assert scored_its_result(out, "tallrec-book-4")


def test_an_arm_trained_again_is_scored_again(tmp_path: Path) -> None:
    out = tmp_path / "study"
    run_script(tmp_path, out)
    ev, runs = out / "eval", out / "runs"
    old = (ev / "tallrec-book-8" / "report.json").read_text()
    shutil.rmtree(runs / "tallrec-book-8")  # the documented way to train an arm again
    log, calls = run_script(tmp_path, out)
    assert verbs(calls) == [("train", "tallrec-book-8"), ("eval", "tallrec-book-8"), ("table", "")]
    assert "tallrec-book-8: " in log and "trained again since), scoring it again" in log
    assert "tallrec-book-4: scored already" in log and "base: scored already" in log
    assert scored_its_result(out, "tallrec-book-8")
    assert (ev / "tallrec-book-8" / "report.json").read_text() != old

    # a report folder without the record (or with another run's) is not trusted either
    (ev / "tallrec-book-4" / RECORD).unlink()
    _, calls = run_script(tmp_path, out)
    assert verbs(calls) == [("eval", "tallrec-book-4"), ("table", "")]


# ---- the real path, in process -------------------------------------------------------------------------


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
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "save_steps": 1},
        "eval": {"bootstrap": 100, "batch_size": 4, "tasks": [
            {"name": "book_test", "type": "tallrec", "format": "tallrec", "path": str(book), "split": "test"},
            {"name": "movie_test", "type": "tallrec", "format": "tallrec", "path": str(movie), "split": "test"},
        ]},
    }  # fmt: skip
    path = tmp_path / "tallrec.yaml"
    path.write_text("# tuneforge train tallrec.yaml\n" + yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_the_scripts_commands_train_score_and_table_for_real(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, out = tiny_recipe(tmp_path, tiny_model_dir), tmp_path / "study"
    _, calls = run_script(tmp_path, out, arms="4", RECIPE=str(recipe))  # the argv the script gives, stubbed
    assert [c[1] for c in calls[:-1]] == [str(recipe)] * 3
    shutil.rmtree(out)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.setenv(key, os.environ.get(key, "1"))  # restored after: the CLI sets them
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for argv in calls[:-1]:  # train the arm, score the base, score the arm: in process
            assert tuneforge_main(argv) == 0, argv
            if "--output" in argv:  # the script's rename, once a report folder is finished
                done = Path(argv[argv.index("--output") + 1])
                done.rename(done.with_name(done.name.removesuffix(".partial")))
    finally:
        torch.set_num_threads(threads)
    assert calls[-1][1:] == ["-m", "tuneforge.bench.tallrec_table", str(out)]
    assert tallrec_table.main([str(out)]) == 0

    stats = json.loads((out / "runs" / "tallrec-book-4" / "data_stats.json").read_text())
    assert stats["train"] == 4
    table = json.loads((out / "tallrec.json").read_text())
    assert [m["label"] for m in table["models"]] == ["base", "tallrec-book-4"]
    assert [m.get("samples") for m in table["models"]] == [None, 4] and table["models"][1]["steps"] == 2
    assert [(t["name"], t["n"]) for t in table["tasks"]] == [("book_test", 16), ("movie_test", 12)]
    md = (out / "tallrec.md").read_text()
    assert "| movie_test | tallrec-book-4 | 12 |" in md and "| tallrec-book-4 | 4 | 2 |" in md
    for label in ("base", "tallrec-book-4"):  # each model's numbers and intervals are its own report's
        report = json.loads((out / "eval" / label / "report.json").read_text())
        assert [mdl["label"] for mdl in report["models"]] == [label]
        for k, task in enumerate(report["tasks"]):
            for metric in ("auc", "accuracy"):
                got, want = table["tasks"][k]["scores"][label][metric], task["scores"][label][metric]
                assert got == {key: pytest.approx(want[key], abs=1e-6) for key in got}, (label, metric)
    diff = table["tasks"][1]["scores"]["tallrec-book-4"]["auc_minus_base"]
    assert diff["ci95_low"] <= diff["value"] <= diff["ci95_high"]


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
