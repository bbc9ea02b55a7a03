"""`tuneforge compare` with compare.source=knowledge: the knowledge lab as a preset (its world, questions,
documents and pt fine-tunes), checked without training; the lab's own end-to-end test stays in test_rag_lab.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_sft import cfg_file
from tuneforge.cli import load_config
from tuneforge.compare import CompareError, plan_compare
from tuneforge.compare.context import build_contexts
from tuneforge.compare.run import _retrieval
from tuneforge.config import ConfigError

LAB_ARMS = [
    {"kind": "zero_shot", "name": "base"},
    {"kind": "rag", "name": "base+rag"},
    {"kind": "tuned", "method": "lora", "train_on": "docs", "name": "ft_docs"},
    {"kind": "tuned_rag", "method": "lora", "train_on": "paraphrased", "name": "ft_paraphrase+rag"},
]


def knowledge_cfg(tmp_path: Path, model_dir: Path, arms: list[dict[str, Any]], **extra: Any) -> Any:
    raw = {
        "name": "kn",
        "model": {"path": str(model_dir)},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 1, "threads": 1, "seed": 3},
        "data": {"cutoff_len": 32},
        "rag": {"embedder": "none", "retriever": "bm25", "top_k": 1},
        "lab": {"entities": 4, "paraphrases": 1},
        "compare": {"source": "knowledge", "arms": arms, "out": str(tmp_path / "cmp")},
        **extra,
    }
    return load_config(cfg_file(tmp_path, raw), [])


def test_the_knowledge_preset_is_the_labs_world_and_fine_tunes(tmp_path: Path, tiny_model_dir: Path) -> None:
    plan = plan_compare(knowledge_cfg(tmp_path, tiny_model_dir, LAB_ARMS))
    task = plan.source.task
    assert task.task.spec.type == "multiple_choice" and len(task.items) == 16 and plan.source.chance == 0.25
    assert [p.name for p in plan.training.points] == ["lora", "lora-paraphrased"]  # docs: the default set
    docs, para = (p.config for p in plan.training.points)
    assert docs["stage"] == "pt" and docs["data"]["datasets"][0]["format"] == "text"
    assert docs["data"]["datasets"][0]["path"].endswith("data/docs.jsonl")
    assert para["data"]["datasets"][0]["path"].endswith("data/paraphrased.jsonl")
    assert docs["method"]["r"] == 4 and docs["train"]["seed"] == 3
    lines = (tmp_path / "cmp" / "data" / "paraphrased.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(x)["text"] for x in lines)
    # the RAG arms' passages: BM25 over the biographies, the gold biography first (every question names its person)
    files = build_contexts(plan)
    rag = json.loads(files["rag"].read_text())
    assert len(rag["items"]) == 16 and all(x["passages"].startswith("[1] (") for x in rag["items"])
    assert _retrieval(plan)["recall@1"] == 1.0


def test_knowledge_refuses_few_shot_arms_and_its_own_keys(tmp_path: Path, tiny_model_dir: Path) -> None:
    arms = [{"kind": "few_shot", "k": 2}, {"kind": "tuned", "method": "lora", "train_on": "notes"}]
    with pytest.raises(CompareError) as e:
        plan_compare(knowledge_cfg(tmp_path, tiny_model_dir, arms))
    assert "compare.arms[0] (few_shot_similar_k2): compare.source=knowledge has documents, not solved" in str(e.value)
    assert "train_on='notes' is not a training set of compare.source=knowledge; allowed: docs, paraphrased" in str(
        e.value
    )
    cfg = knowledge_cfg(tmp_path, tiny_model_dir, LAB_ARMS[:1], rag={"documents": ["x"], "embedder": "none"})
    with pytest.raises(ConfigError, match=r"compare\.source=knowledge sets rag\.documents itself"):
        plan_compare(cfg)
