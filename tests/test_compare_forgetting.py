"""`compare.forgetting`: a comparison's trained arms on general benchmarks against the base (tuneforge.eval's
forgetting report), a column per general task in the table, read back on a rerun; a bad general config refused
before anything trains. On the tiny model, one trained arm and zero_shot, a general config the test writes."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_compare import cfg_of, compare_raw, in_process
from tests.test_forgetting import write_arc, write_chat
from tests.test_sft import cfg_file
from tuneforge.cli import main
from tuneforge.compare import CompareError, plan_compare
from tuneforge.compare.forgetting import columns, note
from tuneforge.eval.forgetting import forgetting_report

ARMS = [{"kind": "zero_shot"}, {"kind": "tuned", "method": "lora"}]


def general_config(tmp_path: Path, limit: int | None = None, **extra: Any) -> Path:
    """Two small general tasks: ARC-style multiple choice and the perplexity of held-out answers."""
    arc, chat = write_arc(tmp_path / "a.json", 8), write_chat(tmp_path / "c.json", 6)
    tasks = [
        {"name": "arc", "type": "multiple_choice", "format": "llm_adapters", "path": str(arc)},
        {"name": "chat", "type": "answer_perplexity", "format": "alpaca", "path": str(chat)},
    ]
    body = {"name": "general", "eval": {"tasks": tasks, "batch_size": 4, **({"limit": limit} if limit else {})}}
    path = tmp_path / "general.yaml"
    path.write_text(yaml.safe_dump({**body, **extra}), encoding="utf-8")
    return path


def test_trained_arms_get_general_columns_and_a_rerun_reads_them_back(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(subprocess, "run", in_process)  # training and answering in this process (test_compare)
    general = general_config(tmp_path)
    arms = [*ARMS, {"kind": "tuned_few_shot", "method": "lora", "k": 2, "select": "random"}]  # shares lora's run
    raw = compare_raw(tmp_path, tiny_model_dir, arms, compare={"forgetting": str(general)})
    path, out = cfg_file(tmp_path, raw), tmp_path / "cmp"
    assert main(["compare", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "| arc: run - base [95% CI] | chat: run - base [95% CI] |" in printed
    summary = json.loads((out / "compare.json").read_text())
    assert summary["forgetting"]["status"] == "ok" and summary["forgetting"]["how"] == "evaluated"
    assert summary["forgetting"]["general_tasks"] == ["arc", "chat"]
    report = json.loads((out / "forgetting" / "forgetting.json").read_text())
    assert [r["path"] for r in report["runs"]] == [str(out / "runs" / "lora")]  # the trained run only, once
    rows = {r["arm"]: r for r in summary["rows"]}
    zero, lora = rows["zero_shot"], rows["lora"]
    for task in ("arc", "chat"):
        diff, low, high, verdict = columns(task)
        assert all(rows["lora+few_shot_random_k2"][c] == lora[c] for c in columns(task))  # one run, one row of numbers
        assert zero[verdict] == "base" and zero[diff] is None  # the base model: no change by construction
        (change,) = [c for c in report["general"] if c["task"] == task]
        assert (lora[diff], lora[low], lora[high], lora[verdict]) == (
            change["diff"], change["low"], change["high"], change["verdict"],
        )  # fmt: skip
        assert lora[low] <= lora[diff] <= lora[high]
        assert lora[verdict] in ("forgot", "no measurable change", "improved")
    chat = lora[columns("chat")[0]]
    assert chat != 0  # one step at lr 1e-2 moves the held-out answers' perplexity
    assert report["general"][1]["metric"] == "perplexity" and summary["forgetting"]["tasks"]["chat"]["n"] == 6
    with (out / "compare.csv").open() as f:
        by_arm = {r["arm"]: r for r in csv.DictReader(f)}
    assert by_arm["zero_shot"]["general_chat_verdict"] == "base"
    assert float(by_arm["lora"]["general_chat"]) == pytest.approx(chat)
    md = (out / "compare.md").read_text()
    assert f"{chat:+.3f} [" in md and "General benchmarks (compare.forgetting:" in md
    recommended = summary["recommended"]
    assert note(rows[recommended], recommended == "lora", ["arc", "chat"]) in summary["recommendation"]

    # a rerun with nothing changed evaluates nothing again
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ran again")

    monkeypatch.setattr("tuneforge.compare.run.run_worker", refuse)
    monkeypatch.setattr("tuneforge.compare.run.subprocess.run", refuse)
    monkeypatch.setattr("tuneforge.eval.forgetting.forgetting_report", refuse)
    assert main(["compare", str(path)]) == 0
    again = json.loads((out / "compare.json").read_text())
    general = [c for t in ("arc", "chat") for c in columns(t)]
    assert again["forgetting"]["how"] == "read back"
    assert [[r[c] for c in general] for r in again["rows"]] == [[r[c] for c in general] for r in summary["rows"]]
    # another general config (a limit) for the same folder: the arms are read back, the report is made again
    made: list[Any] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(args[0].eval.limit)
        return forgetting_report(*args, **kwargs)

    monkeypatch.setattr("tuneforge.eval.forgetting.forgetting_report", counted)
    general_config(tmp_path, limit=4)
    assert main(["compare", str(path)]) == 0
    third = json.loads((out / "compare.json").read_text())
    assert made == [4] and third["forgetting"]["how"] == "evaluated" and third["forgetting"]["limit"] == 4
    assert {c["n"] for c in json.loads((out / "forgetting" / "forgetting.json").read_text())["general"]} == {4}
    # a report that fails leaves the arms' table, names the error and its log, and the comparison exits 1

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr("tuneforge.eval.forgetting.forgetting_report", broken)
    general_config(tmp_path, limit=3)
    assert main(["compare", str(path)]) == 1
    failed = json.loads((out / "compare.json").read_text())
    assert (
        failed["forgetting"]["status"] == "failed"
        and "RuntimeError: out of memory, say" in failed["forgetting"]["error"]
    )
    assert all(r["status"] == "ok" for r in failed["rows"])
    assert [r["general_chat_verdict"] for r in failed["rows"]] == ["base", "failed", "failed"]
    assert "failed: RuntimeError: out of memory, say; see " in (out / "compare.md").read_text()
    assert "out of memory, say" in (out / "logs" / "forgetting.log").read_text()
    assert not (out / "forgetting" / "inputs.json").exists()  # the old report is not read back as this one


def test_the_recommendation_names_what_the_recommended_arm_forgot() -> None:
    row = {"arm": "lora"}
    for task, (d, lo, hi, v) in {
        "arc_easy": (-0.05, -0.09, -0.01, "forgot"),
        "chat": (0.1, -0.2, 0.4, "no measurable change"),
    }.items():
        row.update(dict(zip(columns(task), (d, lo, hi, v), strict=True)))
    assert note(row, True, ["arc_easy", "chat"]).startswith(
        "lora is recommended; it forgot on arc_easy (-0.050 [-0.090, -0.010])"
    )
    row[columns("arc_easy")[3]] = "improved"
    assert note(row, True, ["arc_easy", "chat"]) == (
        "lora forgot nothing measurable on the general benchmarks (arc_easy, chat)."
    )
    assert "base model" in note({"arm": "zero_shot"}, False, ["arc_easy"])


def test_a_bad_general_config_is_refused_before_anything_trains(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "nowhere.yaml"
    cfg = cfg_of(tmp_path, tiny_model_dir, ARMS, [f"compare.forgetting={gone}"])
    with pytest.raises(CompareError, match=rf"compare\.forgetting='{gone}': {gone} does not exist"):
        plan_compare(cfg)
    named = general_config(tmp_path, model={"path": str(tiny_model_dir)})
    cfg = cfg_of(tmp_path, tiny_model_dir, ARMS, [f"compare.forgetting={named}"])
    with pytest.raises(CompareError, match=rf"compare\.forgetting='{named}': {named} has a model: section"):
        plan_compare(cfg)
    cfg = cfg_of(tmp_path, tiny_model_dir, ARMS, [f"compare.forgetting={general_config(tmp_path)}"])
    (tmp_path / "a.json").unlink()  # a general task whose file is gone
    with pytest.raises(
        CompareError, match=r"compare\.forgetting=.*eval\.tasks\[0\] \(arc\) of 'general': .*a\.json does not exist"
    ):
        plan_compare(cfg)
    general = yaml.safe_load(general_config(tmp_path).read_text())
    general["eval"]["contrasts"] = [["lora", "bsae"]]  # labels are base and the trained arms' run names
    (tmp_path / "general.yaml").write_text(yaml.safe_dump(general), encoding="utf-8")
    cfg = cfg_of(tmp_path, tiny_model_dir, ARMS, [f"compare.forgetting={tmp_path / 'general.yaml'}"])
    with pytest.raises(CompareError, match=r"compare\.forgetting=.*'bsae' is not an evaluated model \(did you mean"):
        plan_compare(cfg)
    raw = compare_raw(tmp_path, tiny_model_dir, ARMS, compare={"forgetting": str(gone)})
    assert main(["compare", str(cfg_file(tmp_path, raw))]) == 2
    assert f"compare.forgetting='{gone}'" in capsys.readouterr().err
    assert not (tmp_path / "cmp" / "runs").exists()  # nothing trained


def test_a_trained_arm_on_another_base_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    arms = [
        *ARMS,
        {"kind": "tuned", "method": "lora", "name": "other", "overrides": {"model.path": str(tmp_path / "m2")}},
    ]
    cfg = cfg_of(tmp_path, tiny_model_dir, arms, [f"compare.forgetting={general_config(tmp_path)}"])
    with pytest.raises(
        CompareError, match=r"compare\.forgetting is set, but the run lora-\w+ trains from model\.path="
    ):
        plan_compare(cfg)
