"""compare's plan refuses what would go unread or leak: held-out items in the training data or the few-shot pool,
per-arm overrides the arm's run never reads, eval and lab keys a comparison ignores; one training set, one run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_compare import cfg_of
from tuneforge.compare import CompareError, plan_compare
from tuneforge.compare.leaks import normalised
from tuneforge.config import ArmSpec, arm_run_name

FEW = {"kind": "few_shot", "k": 2, "select": "random"}
LORA = {"kind": "tuned", "method": "lora"}


def alpaca(path: Path, questions: list[str]) -> dict[str, Any]:
    rows = [{"instruction": q, "input": "", "output": f"answer {i}"} for i, q in enumerate(questions)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return {"datasets": [{"path": str(path), "format": "alpaca"}], "cutoff_len": 64}


# --- leaks: the scored items in what the arms learn from ----------------------------------------------------------


def test_training_on_the_held_out_file_is_refused_naming_both(tmp_path: Path, tiny_model_dir: Path) -> None:
    task = tmp_path / "t.json"  # compare_raw writes the held-out task there
    cfg = cfg_of(tmp_path, tiny_model_dir, [FEW], data={"datasets": [{"path": str(task), "format": "alpaca"}]})
    with pytest.raises(CompareError) as e:
        plan_compare(cfg)
    assert f"data.datasets[0] reads {task}, which is the held-out task's eval.tasks[0].path {task}" in str(e.value)


def test_an_arms_own_data_on_the_held_out_file_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    task = tmp_path / "t.json"
    arm = {**LORA, "overrides": {"data.datasets": [{"path": str(task), "format": "alpaca"}]}}
    with pytest.raises(CompareError) as e:
        plan_compare(cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}, arm]))
    assert f"compare.arms[1] (lora): its run's data.datasets[0] reads {task}, which is the held-out" in str(e.value)


@pytest.mark.parametrize("arm", [FEW, LORA])
def test_held_out_questions_in_the_training_split_are_refused(
    tmp_path: Path, tiny_model_dir: Path, arm: dict[str, Any]
) -> None:
    # the held-out questions are "What is 100 plus 100?" ... "What is 105 plus 105?"
    questions = [f"Spell word {i}" for i in range(6)] + ["what is 101 PLUS 101", "  What is 104  plus 104 ?"]
    data = alpaca(tmp_path / "train.json", questions)
    with pytest.raises(CompareError) as e:
        plan_compare(cfg_of(tmp_path, tiny_model_dir, [arm], data=data))
    text = str(e.value)
    assert text.startswith(f"2 of 6 held-out questions of {tmp_path / 't.json'} are also training-split questions")
    assert "e.g. item 1 'What is 101 plus 101?' = " in text and "train.json" in text
    assert normalised("  What is 104  plus 104 ?") == normalised("what is 104 plus 104") == "what is 104 plus 104"


def test_zero_shot_and_rag_arms_do_not_read_the_training_data(tmp_path: Path, tiny_model_dir: Path) -> None:
    task = tmp_path / "t.json"
    cfg = cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}], data={"datasets": [{"path": str(task)}]})
    assert [a.label for a in plan_compare(cfg).arms] == ["zero_shot"]


# --- overrides and keys a comparison does not read -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"), [("eval.bootstrap", 10), ("rag.top_k", 2), ("privacy.dp", True), ("stages", "pt")]
)
def test_overrides_the_run_never_reads_are_refused(tmp_path: Path, tiny_model_dir: Path, key: str, value: Any) -> None:
    arm = {**LORA, "name": "mine", "overrides": {"train.lr": 0.01, key: value}}
    with pytest.raises(CompareError) as e:
        plan_compare(cfg_of(tmp_path, tiny_model_dir, [arm]))
    assert f"compare.arms[0] (mine): overrides {key!r}: an arm's run reads only model.*, data.*, method.*, " in str(
        e.value
    )


def test_overrides_of_the_runs_sections_and_stage_are_allowed(tmp_path: Path, tiny_model_dir: Path) -> None:
    over = {"model.dtype": "float32", "data.cutoff_len": 48, "method.r": 2, "train.lr": 0.02, "stage": "sft"}
    plan = plan_compare(cfg_of(tmp_path, tiny_model_dir, [{**LORA, "overrides": over}]))
    run = plan.training.points[0].config
    assert run["data"]["cutoff_len"] == 48 and run["method"]["r"] == 2 and run["train"]["lr"] == 0.02


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"eval": {"base": False}}, "eval.base is set, but a comparison does not read it"),
        ({"eval": {"runs": ["x"]}}, "eval.runs is set, but a comparison does not read it"),
        ({"eval": {"output_dir": "x"}}, "eval.output_dir is set, but a comparison does not read it"),
        ({"lab": {"entities": 4}}, "lab.entities is set, but compare.source=task does not read lab.*"),
    ],
)
def test_eval_and_lab_keys_a_comparison_ignores_are_refused(
    tmp_path: Path, tiny_model_dir: Path, section: dict[str, Any], message: str
) -> None:
    with pytest.raises(CompareError, match=None) as e:
        plan_compare(cfg_of(tmp_path, tiny_model_dir, [{"kind": "zero_shot"}], **section))
    assert message in str(e.value)


# --- run names ------------------------------------------------------------------------------------------------


def test_train_on_the_default_set_is_the_same_run() -> None:
    unset, default = ArmSpec(kind="tuned", method="lora"), ArmSpec(kind="tuned", method="lora", train_on="docs")
    assert arm_run_name(unset, "docs") == arm_run_name(default, "docs") == "lora"
    other = ArmSpec(kind="tuned", method="lora", train_on="paraphrased")
    assert arm_run_name(other, "docs") == "lora-paraphrased"
    # examples/compare.yaml's runs keep their names (a rerun reads its finished arms back)
    pt = ArmSpec(kind="tuned", method="prompt_tuning", overrides={"train.lr": 3.0e-2})
    assert arm_run_name(ArmSpec(kind="tuned", method="lora"), "train") == "lora"
    assert arm_run_name(pt, "train") == "prompt_tuning-" + hashlib.sha1(b'{"train.lr": 0.03}').hexdigest()[:6]


def test_task_arms_with_and_without_train_on_share_one_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    arms = [LORA, {**LORA, "train_on": "train", "name": "lora_train"}]
    plan = plan_compare(cfg_of(tmp_path, tiny_model_dir, arms))
    assert [a.run for a in plan.arms] == ["lora", "lora"] and [p.name for p in plan.training.points] == ["lora"]
