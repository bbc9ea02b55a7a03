"""Task types on the tiny model (every kind), scoring on known responses, the runner, the report and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.test_eval_readers import write_layouts
from tuneforge.cli import main
from tuneforge.config import ModelConfig, TaskSpec, load
from tuneforge.eval import EvalError, evaluate, load_tasks
from tuneforge.eval.lm import LM, Scored
from tuneforge.eval.prompts import Item
from tuneforge.eval.readers import Example
from tuneforge.eval.tasks import Response, build_task
from tuneforge.models.loader import load_model, load_tokenizer

NEW = {"max_new_tokens": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_layouts(tmp_path_factory.mktemp("eval-data"))


def every_kind(p: dict[str, Path]) -> list[dict[str, Any]]:
    return [
        {"type": "perplexity", "format": "text", "path": str(p["text"]), "max_length": 16},
        {"type": "multiple_choice", "format": "llm_adapters", "path": str(p["arc"]), "name": "arc"},
        {"type": "multiple_choice", "format": "llm_adapters", "path": str(p["arc"]), "name": "arc_2shot_letter",
         "fewshot": 2, "mc_style": "letter"},
        {"type": "multiple_choice", "format": "llm_adapters", "path": str(p["boolq"]), "name": "boolq"},
        {"type": "multiple_choice", "format": "mmlu", "path": str(p["mmlu"]), "subjects": ["astronomy"], "fewshot": 1},
        {"type": "multiple_choice", "format": "csqa", "path": str(p["csqa"])},
        {"type": "classification", "format": "tsv", "path": str(p["sst2"]), "labels": ["negative", "positive"]},
        {"type": "classification", "format": "tsv", "path": str(p["agnews"]), "mode": "generate", **NEW},
        {"type": "classification", "format": "alpaca", "path": str(p["tallrec"]), "name": "tallrec"},
        {"type": "generation", "format": "alpaca", "path": str(p["gen"]), **NEW},
        {"type": "generation", "format": "alpaca", "path": str(p["gen"]), "name": "gen_zh", "language": "zh",
         "metrics": ["rougeL", "bleu"], **NEW},
        {"type": "math", "format": "llm_adapters", "path": str(p["addsub"]), "fewshot": 1, **NEW},
        {"type": "math", "format": "gsm8k", "path": str(p["gsm8k"]), **NEW},
        {"type": "tool_call", "format": "bfcl", "path": str(p["bfcl_simple"]), **NEW},
        {"type": "tool_call", "format": "bfcl", "path": str(p["bfcl_irrelevance"]), **NEW},
    ]  # fmt: skip


def config(tmp_path: Path, model_dir: Path, tasks: list[dict[str, Any]], **ev: Any) -> dict[str, Any]:
    return {"name": "ev", "model": {"path": str(model_dir)}, "output": {"dir": str(tmp_path / "runs")},
            "eval": {"tasks": tasks, "bootstrap": 50, "batch_size": 4, **ev}}  # fmt: skip


def test_every_task_kind_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path, layouts: dict[str, Path]) -> None:
    cfg = load(config(tmp_path, tiny_model_dir, every_kind(layouts)))
    report = evaluate(cfg, progress=False)
    out = tmp_path / "runs" / "ev" / "eval"
    data = json.loads((out / "report.json").read_text())
    names = [t["name"] for t in data["tasks"]]
    assert names == ["held_out", "arc", "arc_2shot_letter", "boolq", "mmlu[astronomy]", "csqa", "SST-2", "agnews",
                     "tallrec", "dates", "gen_zh", "AddSub", "gsm8k", "simple", "irrelevance"]  # fmt: skip
    for t in data["tasks"]:
        for metric, entry in t["scores"]["base"].items():
            v = entry["value"]
            assert v is None or (metric in ("perplexity", "loss", "bleu") and v >= 0) or 0 <= v <= 1, (t, metric)
    assert report.score("held_out", "base") > 1.0  # a random model is perplexed
    assert set(data["tasks"][names.index("tallrec")]["scores"]["base"]) == {"accuracy", "macro_f1", "auc"}
    assert report.score("irrelevance", "base") in (0.0, 1.0)
    assert data["overall"]["tasks"] == 14  # perplexity left out
    for f in ("report.md", "scores.png"):
        assert (out / f).stat().st_size > 0
    lines = (out / "predictions" / "base" / "simple.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "calls" in json.loads(lines[0])
    md = (out / "report.md").read_text()
    assert "| arc | 3 | acc_norm |" in md and "**overall**" in md


def test_batched_loglikelihood_equals_one_by_one(tiny_model_dir: Path) -> None:
    cfg = ModelConfig(path=str(tiny_model_dir))
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok)
    lm = LM(model, tok, batch_size=3, progress=False)
    texts = [
        ("What is the capital of France?", " Paris"),
        ("hello", " world and more"),
        ("a b c d e f", " yes"),
        ("What is the capital of France?", " Rome is not it"),
        ("hello", "!"),
        ("What is the capital of France?", "A"),
    ]
    pairs = [(lm.encode(c), lm.encode(t)) for c, t in texts] * 2  # shared contexts, 1-token and longer answers
    got = lm.loglikelihoods(pairs)
    for (ctx, cont), s in zip(pairs, got, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0, :-1], -1)
        naive = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
        assert s.logprob == pytest.approx(naive, abs=1e-4) and s.tokens == len(cont)


def _scored(*logprobs: float) -> tuple[Scored, ...]:
    return tuple(Scored(lp, 1) for lp in logprobs)


def _score(spec: dict[str, Any], examples: list[Example], responses: list[Response]) -> dict[str, float]:
    task = build_task(TaskSpec(**spec), examples, "t")
    scores = task.score([Item(e) for e in examples], responses)
    return {k: v.value() for k, v in scores.metrics.items()}


def test_multiple_choice_raw_and_length_normalised() -> None:
    ex = [Example("0", "q", "B", ("a", "bbbbbbbbbb"), 1), Example("1", "q", "A", ("a", "bbbbbbbbbb"), 0)]
    # item 0: raw picks "a" (-5 > -6), per byte picks the long one (-0.6 > -5); item 1 the other way round
    got = _score({"type": "multiple_choice", "format": "csqa", "path": "x"}, ex,
                 [Response(_scored(-5, -6)), Response(_scored(-1, -20))])  # fmt: skip
    assert got == {"acc": 0.5, "acc_norm": 1.0}


def test_classification_accuracy_macro_f1_auc() -> None:
    ex = [Example(str(i), "t", target) for i, target in enumerate(["Yes.", "No.", "Yes.", "No."])]
    # log-likelihoods of [No, Yes] (labels sorted): predictions Yes, Yes, No, No
    lls = [(-2, -1), (-1.5, -1), (-1, -3), (-1, -4)]
    got = _score({"type": "classification", "format": "alpaca", "path": "x"}, ex,
                 [Response(_scored(*ll)) for ll in lls])  # fmt: skip
    assert got["accuracy"] == 0.5
    assert got["macro_f1"] == pytest.approx(0.5)  # each class: tp 1, fp 1, fn 1
    # P(yes) = 0.73, 0.62, 0.12, 0.05 for gold Y, N, Y, N: pairs (.73>.62) (.73>.05) (.12<.62) (.12>.05) -> 3/4
    assert got["auc"] == pytest.approx(0.75)
    gen = _score({"type": "classification", "format": "alpaca", "path": "x", "mode": "generate"}, ex,
                 [Response(_scored(0, 0), t) for t in ["Yes, they will.", "no", "I think NO.", "maybe"]])  # fmt: skip
    assert gen["accuracy"] == 0.5  # "maybe" names no label: wrong


def test_classification_needs_names_for_numeric_labels() -> None:
    ex = [Example("0", "good", "1"), Example("1", "bad", "0")]
    with pytest.raises(EvalError, match="labels: \\[negative, positive\\]"):
        build_task(TaskSpec(type="classification", format="tsv", path="x"), ex, "t")
    got = _score({"type": "classification", "format": "tsv", "path": "x", "labels": ["negative", "positive"]}, ex,
                 [Response(_scored(-3, -1)), Response(_scored(-3, -1))])  # fmt: skip
    assert got["accuracy"] == 0.5


def test_math_generation_and_tool_scoring() -> None:
    ex = [Example("0", "q", "7"), Example("1", "q", "1,000"), Example("2", "q", "8.0")]
    texts = ["3 + 4 = 7. The answer is 7.", "#### 1000", "The answer is 9 (8 was wrong)."]
    got = _score({"type": "math", "format": "gsm8k", "path": "x"}, ex, [Response(text=t) for t in texts])
    assert got == {"accuracy": pytest.approx(2 / 3)}
    gen = [Example("0", "q", "2021-03-14"), Example("1", "q", "Paris")]
    got = _score({"type": "generation", "format": "alpaca", "path": "x", "metrics": ["exact_match", "f1"]}, gen,
                 [Response(text="2021-03-14"), Response(text="It is Paris, France")])  # fmt: skip
    assert got == {"exact_match": 0.5, "f1": pytest.approx((1 + 0.4) / 2)}  # [it, is, paris, france]: P 1/4 R 1
    calls = ({"add": {"a": [1], "b": [2]}},)
    tools = [Example("0", "q", calls=calls), Example("1", "q", calls=calls), Example("irrelevance_0", "q", calls=())]
    texts = ['[{"name": "add", "arguments": {"a": 1, "b": 2}}]', "add(a=1, b=3)", "Shakespeare wrote it."]
    got = _score({"type": "tool_call", "format": "bfcl", "path": "x"}, tools, [Response(text=t) for t in texts])
    assert got == {"accuracy": pytest.approx(2 / 3), "name_accuracy": 1.0, "format_valid": 1.0}


def test_perplexity_is_exp_of_mean_token_loss() -> None:
    ex = [Example("0", "a b c"), Example("1", "d e")]
    responses = [Response((Scored(-2.0, 2), Scored(-1.0, 1))), Response((Scored(-3.0, 3),))]
    got = _score({"type": "perplexity", "format": "text", "path": "x"}, ex, responses)
    assert got["loss"] == pytest.approx(1.0) and got["perplexity"] == pytest.approx(math.e)


def test_same_seed_same_numbers_and_limit_sampling(tmp_path: Path, tiny_model_dir: Path, layouts: dict) -> None:
    tasks = [{"type": "multiple_choice", "format": "mmlu", "path": str(layouts["mmlu"])},
             {"type": "math", "format": "gsm8k", "path": str(layouts["gsm8k"]), **NEW}]  # fmt: skip
    runs = []
    for out in ("a", "b"):
        cfg = load(config(tmp_path, tiny_model_dir, tasks, limit=3, output_dir=str(tmp_path / out)))
        runs.append(json.loads((evaluate(cfg, progress=False) and tmp_path / out / "report.json").read_text()))
    for t in runs[0]["tasks"] + runs[1]["tasks"]:
        t.pop("seconds")
    assert runs[0] == runs[1]
    assert runs[0]["tasks"][0]["n"] == 3  # 4 MMLU items, a seeded sample of 3
    picked = [i.example.id for i in load_tasks(load(config(tmp_path, tiny_model_dir, tasks, limit=3)))[0].items]
    other = [i.example.id for i in load_tasks(load(config(tmp_path, tiny_model_dir, tasks, limit=3, seed=7)))[0].items]
    assert len(picked) == len(other) == 3 and picked == sorted(picked)


def _fake_run(root: Path, model_dir: Path, zero: bool) -> Path:
    """A run folder holding a LoRA adapter (zero-initialised B: the tuned model equals the base)."""
    from peft import LoraConfig, get_peft_model

    run = root / ("noop" if zero else "random")
    cfg = ModelConfig(path=str(model_dir))
    model = get_peft_model(load_model(cfg), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=zero))
    if not zero:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    model.save_pretrained(run / "adapter")
    (run / "config.yaml").write_text(yaml.safe_dump({"name": run.name, "model": {"path": str(model_dir)}}))
    return run


def test_cli_base_vs_runs_side_by_side(tmp_path: Path, tiny_model_dir: Path, layouts: dict, capsys) -> None:
    noop, rand = _fake_run(tmp_path, tiny_model_dir, True), _fake_run(tmp_path, tiny_model_dir, False)
    tasks = [
        {"type": "multiple_choice", "format": "llm_adapters", "path": str(layouts["arc"]), "name": "arc"},
        {"type": "classification", "format": "tsv", "path": str(layouts["sst2"]), "labels": ["neg", "pos"]},
    ]
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, tiny_model_dir, tasks)))
    runs = ["--run", str(noop), "--run", str(rand)]
    assert main(["eval", str(path), "eval.bootstrap=100", "eval.contrasts=[[random,noop]]", *runs]) == 0
    md = capsys.readouterr().out
    assert "| task | n | metric | base | noop | random | noop - base [95% CI] | random - base [95% CI] |" in md
    assert "## Contrasts (eval.contrasts, primary metric)" in md and "| random - noop [95% CI] |" in md
    data = json.loads((noop / "eval" / "ev" / "report.json").read_text())  # the first run's eval folder
    assert [m["label"] for m in data["models"]] == ["base", "noop", "random"]
    same = [c for t in data["tasks"] for c in t["comparisons"] if c["model"] == "noop"]
    assert same and all((c["value"], c["ci95_low"], c["ci95_high"]) == (0, 0, 0) for c in same)
    for t in data["tasks"]:  # noop is the base model, so random - noop is random - base on the same resamples
        vs_base = {c["metric"]: c for c in t["comparisons"] if c["model"] == "random"}
        assert {c["metric"] for c in t["contrasts"]} == set(vs_base) and t["contrasts"]
        for c in t["contrasts"]:
            assert (c["model"], c["reference"]) == ("random", "noop")
            assert all(c[k] == pytest.approx(vs_base[c["metric"]][k], nan_ok=True) for k in ("value", "ci95_low"))
    assert main(["eval", str(path), "eval.contrasts=[[randm,noop]]", *runs]) == 2
    err = capsys.readouterr().err
    assert "eval.contrasts[0] = ['randm', 'noop']: 'randm' is not an evaluated model (did you mean 'random'?)" in err
    logps = [json.loads(line)["logprobs"] for line in (noop / "eval/ev/predictions/random/arc.jsonl").open()]
    base = [json.loads(line)["logprobs"] for line in (noop / "eval/ev/predictions/base/arc.jsonl").open()]
    assert logps != base  # the random adapter does change the model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": "cais/mmlu"}, "looks like a Hugging Face hub id"),
        ({"subjects": ["astronomyy"]}, "did you mean 'astronomy'"),
        ({"mc_style": "letter", "type": "math"}, "mc_style does not apply to a math task"),
        ({"labels": ["a"]}, "labels does not apply to a multiple_choice task"),
        ({"format": "bfcl"}, "cannot feed a multiple_choice task"),
        ({"fewshot": 1, "fewshot_split": "test"}, "shots would leak answers"),
    ],
)
def test_bad_tasks_fail_before_any_model_loads(
    tmp_path: Path, layouts: dict, capsys, change: dict[str, Any], message: str
) -> None:
    task = {"type": "multiple_choice", "format": "mmlu", "path": str(layouts["mmlu"]), **change}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, tmp_path / "no-such-model", [task])))
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "eval.tasks[0]" in err and "Traceback" not in err


def test_missing_run_and_empty_tasks_are_clear(tmp_path: Path, tiny_model_dir: Path, layouts: dict, capsys) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, tiny_model_dir, [])))
    assert main(["eval", str(path)]) == 2 and "eval.tasks is empty" in capsys.readouterr().err
    task = {"type": "multiple_choice", "format": "csqa", "path": str(layouts["csqa"])}
    path.write_text(yaml.safe_dump(config(tmp_path, tiny_model_dir, [task])))
    assert main(["eval", str(path), "--run", str(tmp_path / "runs" / "nope")]) == 2
    assert "not a tuneforge run folder" in capsys.readouterr().err
