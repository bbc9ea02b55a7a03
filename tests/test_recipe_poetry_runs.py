"""The poetry recipe end to end on a tiny random model: `tuneforge data poetry` on a small chinese-poetry folder,
the three recipe files as they are (2 steps each: PT, PT with vocabulary extension, SFT continuing each PT run),
then poetry_eval.yaml: base and the four runs on the held-out titles with the poetry task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.test_recipe_poetry import RECIPES, corpus
from tuneforge.cli import load_config, main
from tuneforge.eval import evaluate
from tuneforge.eval.poetry_metrics import METRICS
from tuneforge.stages import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
pytest.importorskip("pypinyin")

TINY = ["train.max_steps=2", "train.logging_steps=1", "data.cutoff_len=64", "data.val_size=0.2"]


def test_the_recipe_on_a_tiny_model(tmp_path: Path, tiny_llama3_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = corpus(tmp_path / "poetry", n=48)
    monkeypatch.chdir(tmp_path)  # the recipes' paths (data/poetry, runs/...) are relative to where they run
    assert main(["data", "poetry", str(src), "--out", "data/poetry", "--n", "6"]) == 0
    base = [f"model.path={tiny_llama3_dir}", *TINY]

    pt = run_stage(load_config(RECIPES / "poetry_pt.yaml", [*base, "method.r=4"]))
    assert pt.steps == 2 and pt.train_loss is not None and math.isfinite(pt.train_loss)
    figures = json.loads((pt.run_dir / "pt_perplexity.json").read_text())
    assert math.isfinite(figures["perplexity_before"]) and math.isfinite(figures["perplexity_after"])

    vocab = run_stage(load_config(RECIPES / "poetry_pt_vocab.yaml", [*base, "method.r=4", "vocab.new_tokens=8"]))
    learned = json.loads((vocab.run_dir / "vocab.json").read_text())
    assert len(learned["added"]) == 8 and learned["tokens_per_char_after"] < learned["tokens_per_char_before"]
    assert any(len(piece) == 1 for piece in learned["added"])  # single characters: 3 byte tokens each here

    sft_overrides = [*TINY[:3], "data.val_size=0"]
    sft = run_stage(load_config(RECIPES / "poetry_sft.yaml", sft_overrides))
    assert sft.steps == 2 and math.isfinite(sft.train_loss or math.nan)
    parent = json.loads((sft.run_dir / "result.json").read_text())["parent"]
    assert parent["run"] == "runs/poetry-pt" and parent["method"] == "lora"
    sft_vocab = run_stage(
        load_config(
            RECIPES / "poetry_sft.yaml", [*sft_overrides, "name=poetry-sft-vocab", "model.adapter=runs/poetry-pt-vocab"]
        )
    )
    assert sft_vocab.steps == 2
    tokenizer = AutoTokenizer.from_pretrained(sft_vocab.run_dir / "adapter")  # the extended one, trained further
    assert all(len(tokenizer.tokenize(piece)) == 1 for piece in learned["added"])

    cfg = load_config(RECIPES / "poetry_eval.yaml", ["eval.bootstrap=100", "eval.batch_size=4"])
    report = evaluate(cfg, progress=False)
    labels = ["base", "poetry-pt", "poetry-pt-vocab", "poetry-sft", "poetry-sft-vocab"]
    assert [m["label"] for m in report.data["models"]] == labels
    (task,) = report.data["tasks"]
    n_items = len(json.loads(Path("data/poetry/test.json").read_text(encoding="utf-8")))
    assert task["type"] == "poetry" and task["primary"] == "form" and task["n"] == n_items == 6
    for label in labels:
        scores = task["scores"][label]
        assert set(scores) == set(METRICS)
        for name in ("form", "line_count", "line_length", "no_repeat", "distinct_2"):
            assert 0 <= scores[name]["ci95_low"] <= scores[name]["value"] <= scores[name]["ci95_high"] <= 1
    diffs = {(c["model"], c["metric"]) for c in task["comparisons"]}
    assert {(label, "form") for label in labels[1:]} <= diffs
    assert report.data["models"][0]["model"] == str(tiny_llama3_dir)  # the base poetry-pt trained from
    out = Path("runs/poetry-pt/eval/poetry-eval")  # the first run's report folder
    lines = (out / "predictions" / "poetry-sft-vocab" / "poems.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 6 and {"title", "form", "text", "form_ok", "rhyme", "rhyme_ends", "lines"} <= set(first)
