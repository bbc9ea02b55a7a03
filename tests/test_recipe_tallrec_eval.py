"""TALLRec on tiny random models: P(Yes) is the softmax of the answer position's logits over the "Yes"/"No"
tokens, through each chat template; a 2-step run on a 16-sample draw, then base vs run on in-domain and
cross-domain test splits with paired intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.test_recipe_tallrec import write_tallrec
from tuneforge.cli import load_config
from tuneforge.config import ModelConfig, TaskSpec
from tuneforge.data.render import IGNORE_INDEX, render_conversation
from tuneforge.data.schema import Conversation, Message
from tuneforge.eval import evaluate, read_split
from tuneforge.eval.lm import LM
from tuneforge.eval.prompts import Item
from tuneforge.eval.run import answer
from tuneforge.eval.tasks import build_task
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.stages import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _by_hand(model: Any, tok: Any, user: str, system: str | None) -> float:
    """P(Yes) from one plain forward pass: the template's prompt, the logits after it, the first token of the
    rendered "Yes." and "No." answers (the template's text after the assistant header)."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    firsts = []
    for said in ("Yes.", "No."):
        full = tok.apply_chat_template([*msgs, {"role": "assistant", "content": said}], tokenize=False)
        assert full.startswith(prompt)
        firsts.append(tok(full[len(prompt) :], add_special_tokens=False)["input_ids"][0])
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    yes, no = float(logits[firsts[0]]), float(logits[firsts[1]])
    return 1.0 / (1.0 + math.exp(no - yes))


def _trained_label(tok: Any, user: str, system: str | None, said: str) -> tuple[list[int], int]:
    """What training sees for this item answered `said`: the tokens before the first labelled one (the context)
    and that token, from render_conversation's labels."""
    msgs = ([Message("system", system)] if system else []) + [Message("user", user), Message("assistant", said)]
    rendered = render_conversation(tok, Conversation(tuple(msgs)), cutoff_len=4096)
    assert rendered is not None
    first = next(i for i, label in enumerate(rendered.labels) if label != IGNORE_INDEX)
    assert rendered.labels[first] == rendered.input_ids[first]
    return rendered.input_ids[:first], rendered.labels[first]


@pytest.mark.parametrize("which", ["tiny_model_dir", "tiny_llama3_dir"], ids=["chatml", "llama3"])
@pytest.mark.parametrize("system", [None, "You recommend books."], ids=["no_system", "system"])
def test_p_yes_is_read_at_the_answer_position(
    tmp_path: Path, request: pytest.FixtureRequest, which: str, system: str | None
) -> None:
    model_dir = request.getfixturevalue(which)
    folder = write_tallrec(tmp_path / "book", n_valid=2, n_test=6)
    examples = read_split("tallrec", folder, "test")
    spec = TaskSpec(type="tallrec", format="tallrec", path=str(folder), system=system)
    task = build_task(spec, examples, "eval.tasks[0]")
    cfg = ModelConfig(path=str(model_dir))
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok)
    lm = LM(model, tok, batch_size=4, progress=False)
    items = [Item(e) for e in examples]
    requests = task.prepare(items, lm)
    for e, req in zip(examples, requests, strict=True):
        (ctx, (no,)), (ctx_yes, (yes,)) = req.pairs
        assert ctx == ctx_yes
        trained = _trained_label(tok, e.question, system, e.reference)  # the item's own "Yes." or "No."
        assert trained == (ctx, yes if e.target == "Yes" else no)  # training's first labelled token, same place
        other = _trained_label(tok, e.question, system, "No." if e.target == "Yes" else "Yes.")
        assert other == (ctx, no if e.target == "Yes" else yes)
    scored = task.score(items, answer(lm, requests, "t", 0))
    got = [p["p_yes"] for p in scored.predictions]
    want = [_by_hand(model, tok, e.question, system) for e in examples]
    assert got == pytest.approx(want, abs=1e-5)
    assert len(set(round(p, 6) for p in got)) > 1  # the prompts differ, so do the answers
    assert 0 < scored.metrics["label_mass"].value() < 1


def test_fewshot_prompts_show_solved_items_from_another_split(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = write_tallrec(tmp_path / "book", n_valid=6, n_test=4)
    examples = read_split("tallrec", folder, "test")
    spec = TaskSpec(type="tallrec", format="tallrec", path=str(folder), fewshot=2, fewshot_split="valid")
    task = build_task(spec, examples, "eval.tasks[0]")
    shots = tuple(read_split("tallrec", folder, "valid")[:2])
    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    lm = LM(load_model(ModelConfig(path=str(tiny_model_dir)), tok), tok, progress=False)
    (req,) = task.prepare([Item(examples[0], shots)], lm)
    text = tok.decode(req.pairs[0][0])
    assert text.count("valid-item-") == 2 and text.count("test-item-0") == 1
    answered = text.index("assistant\nYes.")  # valid-item-0 is a Yes item (write_tallrec: even rows)
    assert text.index("valid-item-0") < answered < text.index("test-item-0")  # a shot, its answer, then the item


def test_two_step_run_then_base_vs_run_in_and_across_domains(tmp_path: Path, tiny_model_dir: Path) -> None:
    book = write_tallrec(tmp_path / "book", n_valid=120, n_test=24, seed=1)
    movie = write_tallrec(tmp_path / "movie", n_valid=10, n_test=20, seed=2)
    raw = {
        "name": "tallrec-book-16",
        "stage": "sft",
        "model": {"path": str(tiny_model_dir)},
        "data": {"datasets": [{"path": str(book / "valid.json"), "format": "tallrec"}], "mix_size": 16,
                 "cutoff_len": 256},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "logging_steps": 1},
        "output": {"dir": str(tmp_path / "runs")},
        "eval": {"bootstrap": 200, "batch_size": 4, "tasks": [
            {"name": "book_test", "type": "tallrec", "format": "tallrec", "path": str(book), "split": "test"},
            {"name": "movie_test", "type": "tallrec", "format": "tallrec", "path": str(movie), "split": "test"},
        ]},
    }  # fmt: skip
    path = tmp_path / "tallrec.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = load_config(path, [])
    result = run_stage(cfg)
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    stats = json.loads((result.run_dir / "data_stats.json").read_text())
    assert stats["train"] == 16 and stats["datasets"][str(book / "valid.json")]["read"] == 120

    report = evaluate(cfg, progress=False)  # the config's own run, after the base model
    data = report.data
    assert [mdl["label"] for mdl in data["models"]] == ["base", "tallrec-book-16"]
    for task, n in (("book_test", 24), ("movie_test", 20)):
        entry = next(t for t in data["tasks"] if t["name"] == task)
        assert entry["n"] == n and entry["primary"] == "auc" and entry["type"] == "tallrec"
        for label in ("base", "tallrec-book-16"):
            auc = entry["scores"][label]["auc"]
            assert 0 <= auc["ci95_low"] <= auc["value"] <= auc["ci95_high"] <= 1
        diff = next(c for c in entry["comparisons"] if c["metric"] == "auc")
        base, run = (entry["scores"][k]["auc"]["value"] for k in ("base", "tallrec-book-16"))
        assert diff["model"] == "tallrec-book-16" and diff["reference"] == "base"
        assert diff["value"] == pytest.approx(run - base, abs=2e-6)  # report.json rounds to 6 places
        assert diff["ci95_low"] <= diff["value"] <= diff["ci95_high"]
    out = result.run_dir / "eval" / "tallrec-book-16"
    lines = (out / "predictions" / "tallrec-book-16" / "movie_test.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 20 and set(first) == {"id", "gold", "p_yes", "label_mass", "correct"}
    assert "| book_test | 24 | auc |" in (out / "report.md").read_text()
