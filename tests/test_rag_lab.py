"""The knowledge lab: the fictional world, and a small end-to-end run on the tiny model (the CI configuration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.cli import main
from tuneforge.data.schema import DataError
from tuneforge.rag.lab import read_questions
from tuneforge.rag.world import QUESTIONS, WORDINGS, build_world


def test_world_is_seeded_and_questions_use_unseen_wordings() -> None:
    a, b = build_world(8, seed=3, paraphrases=2), build_world(8, seed=3, paraphrases=2)
    assert a == b and build_world(8, seed=4) != a
    assert len(a.questions) == 32 and len(a.documents) == 8
    for q in a.questions:
        assert len(set(q.choices)) == 4 and 0 <= q.gold < 4
        name = q.question.split(" ")[-2:]  # every question ends with (part of) the name
        assert all(QUESTIONS[k].split("{n}")[0] not in doc for doc in a.paraphrased.values() for k in QUESTIONS)
        assert name
    # each fact of a person is in their plain biography, and in every rewrite in another wording
    e = a.entities[0]
    para = a.paraphrased[e.name.lower().replace(" ", "_") + ".txt"].split("\n\n")
    assert len(para) == 3
    for w, text in enumerate(para):
        for attr, v in e.facts.items():
            assert WORDINGS[attr][w].format(n=e.name, v=v) in text
    golds = [q.choices[q.gold] for q in a.questions]
    assert sum(g == q.choices[0] for g, q in zip(golds, a.questions, strict=True)) < len(golds)  # shuffled


def test_questions_file_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": "b"}\n{"question": "Q?", "choices": ["a"]}\n')
    with pytest.raises(DataError, match=r"q.jsonl:2: `choices` must be a list of at least 2"):
        read_questions(f)
    f.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": "c"}\n')
    with pytest.raises(DataError, match=r"q.jsonl:1: `answer` 'c'"):
        read_questions(f)
    f.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": "b", "id": 7}\n')
    assert read_questions(f) == [{"id": "7", "question": "Q?", "choices": ["a", "b"], "answer": 1}]


def test_lab_small_configuration_end_to_end(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lab"
    args = ["lab", "knowledge", "--out", str(out), "--model", str(tiny_model_dir), "--entities", "5"]
    args += ["--paraphrases", "1", "--retriever", "bm25", "--max-steps", "2", "--bootstrap", "50", "--cutoff-len", "32"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "lab.json").read_text())
    arms = [a["arm"] for a in summary["arms"]]
    assert arms == ["base", "base + RAG", "ft_docs", "ft_docs + RAG", "ft_paraphrase", "ft_paraphrase + RAG"]
    assert summary["questions"] == 20 and summary["chance"] == 0.25
    # every question names its person, whose biography is one chunk: BM25 ranks it first
    assert summary["retrieval"]["recall@1"] == 1.0 and summary["retrieval"]["mrr"] == 1.0
    for a in summary["arms"]:
        assert 0.0 <= a["value"] <= 1.0 and a["ci95_low"] <= a["value"] <= a["ci95_high"]
    assert (out / "lab.png").stat().st_size > 0 and (out / "report" / "report.md").is_file()
    assert (out / "runs" / "ft_paraphrase" / "adapter").is_dir()
    assert "| ft_docs + RAG |" in printed
    # the RAG prompts hold the retrieved biography
    preds = (out / "report" / "predictions" / "base" / "rag.jsonl").read_text().splitlines()
    assert len(preds) == 20
    assert main(args) == 2  # never overwrites
    assert "never overwrites" in capsys.readouterr().err


def test_lab_on_user_documents(tmp_path: Path, tiny_model_dir: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The Zelk fruit is violet and grows on Corrow island.\n")
    (docs / "b.txt").write_text("Quellbrook mines copper in the northern hills of the valley.\n")
    q = tmp_path / "q.jsonl"
    q.write_text(
        json.dumps(
            {
                "question": "What colour is the Zelk fruit?",
                "choices": ["red", "violet"],
                "answer": "violet",
                "gold_chunks": ["a.txt#0"],
            }
        )
        + "\n"
        + json.dumps({"question": "What does Quellbrook mine?", "choices": ["copper", "tin", "salt"], "answer": 0})
        + "\n"
    )
    out = tmp_path / "lab"
    args = ["lab", "knowledge", "--out", str(out), "--model", str(tiny_model_dir), "--docs", str(docs)]
    assert (
        main(
            [
                *args,
                "--questions",
                str(q),
                "--retriever",
                "bm25",
                "--max-steps",
                "1",
                "--cutoff-len",
                "16",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    summary = json.loads((out / "lab.json").read_text())
    assert [a["arm"] for a in summary["arms"]] == ["base", "base + RAG", "ft_docs", "ft_docs + RAG"]
    assert summary["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-4)
    assert summary["retrieval"]["recall@1"] == 1.0


def _capture_lab(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the lab's run by one that keeps its config (the verb's settings, without training anything)."""
    seen: list = []

    def fake_run_lab(cfg: object) -> dict:
        seen.append(cfg)
        out = Path(cfg.lab.out)  # type: ignore[attr-defined]
        out.mkdir(parents=True, exist_ok=True)
        (out / "lab.md").write_text("# lab\n")
        return {}

    monkeypatch.setattr("tuneforge.rag.lab.run_lab", fake_run_lab)
    return seen


def test_lab_takes_config_keys_over_its_presets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _capture_lab(monkeypatch)
    out = tmp_path / "lab"
    assert main(["lab", "knowledge", "lab.entities=5", "method.r=4", "train.lr=5e-3", f"lab.out={out}"]) == 0
    cfg = seen[-1]
    assert (cfg.lab.entities, cfg.method.r, cfg.train.lr, cfg.lab.out) == (5, 4, 5e-3, str(out))
    # the lab's own defaults where nothing set the key
    assert (cfg.method.alpha, cfg.train.epochs, cfg.data.cutoff_len) == (32, 8, 128)
    assert (cfg.rag.top_k, cfg.train.seed, cfg.eval.seed) == (3, 0, 0)
    assert capsys.readouterr().err == ""
    # a config file's values win over the presets too; the overrides over the file
    config = tmp_path / "lab.yaml"
    config.write_text("train: {lr: 5.0e-4, epochs: 2}\nlab: {entities: 6}\nrag: {retriever: bm25}\n")
    assert main(["lab", "knowledge", str(config), "train.epochs=3", f"lab.out={tmp_path / 'lab2'}"]) == 0
    cfg = seen[-1]
    assert (cfg.train.lr, cfg.train.epochs, cfg.lab.entities, cfg.rag.retriever, cfg.train.seed) == (
        5e-4,
        3,
        6,
        "bm25",
        0,
    )


def test_lab_old_flags_still_work_and_name_their_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _capture_lab(monkeypatch)
    args = ["lab", "knowledge", "--out", str(tmp_path / "lab"), "--rank", "8", "--seed", "3", "--top-k", "2"]
    assert main([*args, "--lr", "2e-3", "--bootstrap", "50"]) == 0
    cfg = seen[-1]
    assert (cfg.method.r, cfg.method.alpha, cfg.train.seed, cfg.eval.seed) == (8, 16, 3, 3)
    assert (cfg.rag.top_k, cfg.train.lr, cfg.eval.bootstrap, cfg.lab.out) == (2, 2e-3, 50, str(tmp_path / "lab"))
    err = capsys.readouterr().err
    assert "--rank is now method.r=8 method.alpha=16" in err and "--top-k is now rag.top_k=2" in err
    assert "--seed is now train.seed=3 eval.seed=3" in err and "--bootstrap is now eval.bootstrap=50" in err


def test_lab_bad_keys_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "knowledge", "lab.entitys=5"]) == 2
    assert "lab.entitys" in (err := capsys.readouterr().err) and "did you mean 'entities'" in err
    assert main(["lab", "knowledge", "lab.entities=2"]) == 2  # 3 distractors per question need 4 people
    assert "lab.entities" in capsys.readouterr().err
    # a key the lab sets itself is refused before anything runs
    assert main(["lab", "knowledge", "data.datasets=[{name: identity}]", f"lab.out={tmp_path / 'x'}"]) == 2
    assert "sets data.datasets itself" in capsys.readouterr().err and not (tmp_path / "x").exists()
