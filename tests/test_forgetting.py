"""The forgetting report on tiny random models: the base and a 2-step run on small general task files the test
writes, differences run - base with the paired intervals of tuneforge.eval.stats, the verdicts, the target gain
(from the run's own eval report or a target config), the answer_perplexity task, and the errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.test_adapter_continue import raw
from tuneforge.cli import load_config, main
from tuneforge.config import ModelConfig, RunConfig, TaskSpec
from tuneforge.eval import evaluate, read_split
from tuneforge.eval.forgetting import FORGOT, IMPROVED, SAME, WORSE, check_runs, forgetting_report, verdict
from tuneforge.eval.lm import LM
from tuneforge.eval.prompts import Item
from tuneforge.eval.readers import EvalError
from tuneforge.eval.run import answer
from tuneforge.eval.stats import paired_bootstrap, resample_indices
from tuneforge.eval.tasks import build_task
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.runs import RunDir, RunFolderError
from tuneforge.stages import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def write_arc(path: Path, n: int) -> Path:
    """An ARC-style file in LLM-Adapters' layout: four numbered answers, the right one named."""
    rows = []
    for i in range(n):
        choices = " ".join(f"Answer{k + 1}: option {k} of item {i}." for k in range(4))
        rows.append(
            {
                "instruction": f"Please choose the correct answer to the question: What is item {i}?\n\n{choices}\n\n"
                "Answer format: answer1/answer2/answer3/answer4",
                "input": "",
                "output": f"the correct answer is answer{i % 4 + 1}",
                "answer": f"answer{i % 4 + 1}",
            }
        )
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_chat(path: Path, n: int, word: str = "general") -> Path:
    rows = [
        {"instruction": f"Say something {word} about {i}.", "input": "", "output": f"A {word} fact {i}."}
        for i in range(n)
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def eval_config(tmp: Path, name: str, tasks: list[dict[str, Any]], **ev: Any) -> RunConfig:
    body = {"name": name, "eval": {"bootstrap": 200, "batch_size": 4, "tasks": tasks, **ev}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return load_config(path, [])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """A 2-step LoRA run, its own eval report on the target task, and the general task files."""
    tmp = tmp_path_factory.mktemp("forgetting")
    run = run_stage(load_config(raw(tmp, tiny_model_dir, "narrow", train={"max_steps": 2}), [])).run_dir
    arc, chat = write_arc(tmp / "arc.json", 12), write_chat(tmp / "chat.json", 10)
    target_file = write_chat(tmp / "target.json", 8, "narrow")
    general = [
        {"name": "arc", "type": "multiple_choice", "format": "llm_adapters", "path": str(arc)},
        {"name": "chat", "type": "answer_perplexity", "format": "alpaca", "path": str(chat)},
    ]
    target = [{"name": "narrow_task", "type": "answer_perplexity", "format": "alpaca", "path": str(target_file)}]
    evaluate(eval_config(tmp, "own_target", target), runs=[run], progress=False)  # runs/narrow/eval/own_target/
    return {"tmp": tmp, "run": run, "general": general, "target": target, "model": tiny_model_dir}


def test_report_on_base_and_a_two_step_run(setup: dict[str, Any]) -> None:
    run, tmp = setup["run"], setup["tmp"]
    cfg = eval_config(tmp, "general", setup["general"])
    report = forgetting_report(cfg, [run], progress=False)
    out = RunDir(run).forgetting
    assert report.folder == out and report.base.path == str(setup["model"])
    assert [c.task for c in report.general] == ["arc", "chat"] and {c.run for c in report.general} == {"narrow"}
    ev = report.general_report
    for k, change in enumerate(report.general):
        rows = {r.model: r.scores.metrics[change.metric] for r in ev.results if r.task == change.task}
        assert change.base == pytest.approx(rows["base"].value(), abs=1e-6)
        assert change.after == pytest.approx(rows["narrow"].value(), abs=1e-6)
        assert change.diff == pytest.approx(change.after - change.base, abs=1e-5)  # run - base
        paired = paired_bootstrap(rows["base"], rows["narrow"], resample_indices(change.n, 200, 42 + k))
        assert (change.low, change.high) == (pytest.approx(paired.low, abs=1e-6), pytest.approx(paired.high, abs=1e-6))
        assert change.verdict == verdict(change.low, change.high, change.higher_is_better)
    chat = report.general[1]
    assert chat.metric == "perplexity" and not chat.higher_is_better and chat.diff != 0  # two steps at lr 1e-2
    (gain,) = report.target  # read from the run's own report, not from the forgetting report's general/ one
    assert gain.task == "narrow_task" and gain.source == str(RunDir(run).eval / "own_target" / "report.json")
    assert gain.verdict in (WORSE, SAME, IMPROVED)
    assert RunDir(run).eval_reports() == [RunDir(run).eval / "own_target" / "report.json"]
    data = json.loads((out / "forgetting.json").read_text())
    assert [g["task"] for g in data["general"]] == ["arc", "chat"] and data["target"][0]["task"] == "narrow_task"
    assert sum(data["summary"]["narrow"].values()) == 2
    md = (out / "forgetting.md").read_text()
    assert "| arc | narrow | 12 |" in md and "| chat | narrow | 10 | perplexity (lower is better)" in md
    assert (out / "forgetting.png").stat().st_size > 0 and (out / "general" / "report.json").is_file()


def test_target_config_in_the_same_call_through_the_cli(setup: dict[str, Any], tmp_path: Path) -> None:
    tmp = setup["tmp"]
    general, target = tmp / "general.yaml", tmp / "target.yaml"
    general.write_text(yaml.safe_dump({"name": "g", "eval": {"tasks": setup["general"]}}), encoding="utf-8")
    target.write_text(yaml.safe_dump({"name": "t", "eval": {"tasks": setup["target"]}}), encoding="utf-8")
    argv = ["forgetting", str(setup["run"]), "--general", str(general), "--target", str(target)]
    assert main([*argv, "--limit", "6", "--output", str(tmp_path / "fg")]) == 0
    data = json.loads((tmp_path / "fg" / "forgetting.json").read_text())
    assert data["limit"] == 6 and {g["n"] for g in data["general"]} == {6}  # --limit: the general tasks only
    (gain,) = data["target"]
    assert gain["n"] == 8 and gain["source"] == str(tmp_path / "fg" / "target" / "report.json")
    assert gain["verdict"] != FORGOT  # a target that got worse is "worse", not "forgot"


@pytest.mark.parametrize(
    ("low", "high", "higher", "want"),
    [
        (-0.20, -0.01, True, FORGOT),
        (-0.05, 0.03, True, SAME),
        (0.0, 0.10, True, SAME),  # an interval touching 0 holds it
        (0.02, 0.30, True, IMPROVED),
        (0.5, 2.0, False, FORGOT),  # perplexity up: worse
        (-2.0, -0.5, False, IMPROVED),
        (-0.1, 0.2, False, SAME),
        (float("nan"), float("nan"), True, "no interval"),
        (None, None, True, "no interval"),
    ],
)
def test_verdict_on_hand_made_intervals(low: float | None, high: float | None, higher: bool, want: str) -> None:
    assert verdict(low, high, higher) == want
    if want == FORGOT:
        assert verdict(low, high, higher, worse=WORSE) == WORSE


def test_answer_perplexity_scores_the_reference_answer(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_chat(tmp_path / "chat.json", 3)
    examples = read_split("alpaca", path, "test")
    task = build_task(TaskSpec(type="answer_perplexity", format="alpaca", path=str(path)), examples, "t")
    cfg = ModelConfig(path=str(tiny_model_dir))
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok)
    items = [Item(e) for e in examples]
    scored = task.score(items, answer(LM(model, tok, 2, False), task.prepare(items, LM(model, tok, 2, False)), "t", 0))
    nll = tokens = 0.0
    for e, pred in zip(examples, scored.predictions, strict=True):  # by hand: one pass over prompt + answer
        msgs = [{"role": "user", "content": e.question}]
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template([*msgs, {"role": "assistant", "content": e.reference}], tokenize=False)
        said = full[len(prompt) :].split("<|im_end|>")[0] + "<|im_end|>"  # ChatML: up to the end-of-turn token
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(said, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + a_ids])).logits[0].float(), -1)
        want = -sum(float(logp[len(p_ids) - 1 + j, t]) for j, t in enumerate(a_ids))
        assert pred["nll"] == pytest.approx(want, abs=1e-3) and pred["tokens"] == len(a_ids)
        nll, tokens = nll + want, tokens + len(a_ids)
    assert scored.metrics["perplexity"].value() == pytest.approx(math.exp(nll / tokens), rel=1e-3)
    empty = [{"instruction": "Q", "input": "", "output": ""}]
    (tmp_path / "empty.json").write_text(json.dumps(empty), encoding="utf-8")
    spec = TaskSpec(type="answer_perplexity", format="alpaca", path=str(tmp_path / "empty.json"))
    with pytest.raises(EvalError, match=r"item 0 of .*empty\.json has no reference answer"):
        build_task(spec, read_split("alpaca", tmp_path / "empty.json", "test"), "t")


def fake_run(root: Path, model_path: str) -> Path:
    """A finished-looking run folder (config.yaml and adapter/) trained from `model_path`: enough for the checks."""
    (root / "adapter").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"name": root.name, "model": {"path": model_path}}))
    return root


def test_not_a_finished_run_is_an_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=f"{tmp_path / 'nope'} is not a finished tuneforge run folder"):
        check_runs([tmp_path / "nope"])
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunFolderError, match=r"plain is not a finished tuneforge run folder: it has no config\.yaml"):
        check_runs([tmp_path / "plain"])
    unfinished = fake_run(tmp_path / "half", "embedded")
    (unfinished / "adapter").rmdir()
    with pytest.raises(RunFolderError, match="half has no trained output yet"):
        check_runs([unfinished])
    assert main(["forgetting", str(tmp_path / "nope")]) == 2


def test_runs_from_two_bases_are_refused_naming_both(tmp_path: Path) -> None:
    a, b = fake_run(tmp_path / "a", "embedded"), fake_run(tmp_path / "b", str(tmp_path / "other-model"))
    with pytest.raises(EvalError, match=f"one base model per forgetting report: {a} was trained from "
                       f"model.path='embedded', {b} from model.path='{tmp_path / 'other-model'}'"):  # fmt: skip
        check_runs([a, b])
    base, found = check_runs([a, fake_run(tmp_path / "c", "embedded")])
    assert base.path == "embedded" and [r for r, _ in found] == [a, tmp_path / "c"]


def test_missing_general_file_and_a_config_naming_another_base(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "r", "embedded")
    gone = tmp_path / "shared" / "arc.json"
    task = {"name": "arc_easy", "type": "multiple_choice", "format": "llm_adapters", "path": str(gone)}
    cfg = eval_config(tmp_path, "g", [task])
    with pytest.raises(EvalError, match=rf"eval.tasks\[0\] \(arc_easy\) of 'g': {gone} does not exist: .*"
                       r"\.\./shared/data.*point the task's path at your own copy"):  # fmt: skip
        forgetting_report(cfg, [run], progress=False)
    fine = eval_config(tmp_path, "g2", [{**task, "path": str(write_arc(tmp_path / "arc.json", 2))}])
    bad_target = eval_config(tmp_path, "t", [{**task, "format": "csqa", "path": str(tmp_path / "arc.json")}])
    with pytest.raises(EvalError, match=r"arc\.json"):  # the target's data fails before the general tasks run
        forgetting_report(fine, [run], bad_target, progress=False)
    typo = bad_target.model_copy(update={"eval": bad_target.eval.model_copy(update={"contrasts": [("rr", "base")]})})
    fine_target = typo.model_copy(update={"eval": typo.eval.model_copy(update={"tasks": fine.eval.tasks})})
    with pytest.raises(EvalError, match=r"eval.contrasts\[0\] = \['rr', 'base'\]: 'rr' is not an evaluated model "
                       r"\(did you mean 'r'\?\); the models are base, r"):  # fmt: skip
        forgetting_report(fine, [run], fine_target, progress=False)  # before the general tasks run
    other = cfg.model_copy(update={"model": ModelConfig(path=str(tmp_path / "m"))})
    with pytest.raises(EvalError, match=r"names model\.path=.*but the runs were trained from model\.path='embedded'"):
        forgetting_report(other, [run], progress=False)
