"""Data recipes: chunks, template / model-written QA, keyword–chunk pairs, summary–function pairs, card, registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_rag_index import write_corpus
from tuneforge.cli import main
from tuneforge.config import DatasetSpec
from tuneforge.data.documents import Chunk, Document
from tuneforge.data.recipes import PrepareSettings, dedupe, prepare
from tuneforge.data.recipes.code import code_records, functions
from tuneforge.data.recipes.text import generated_qa, keyword_records, keywords, parse_qa, template_qa
from tuneforge.data.registry import resolve
from tuneforge.data.schema import DataError


def test_template_qa_from_definitions_and_sections() -> None:
    doc = Document(
        "t.md",
        "# Towns\n\n## Varnholt\n\nVarnholt is a harbour town founded in 1712. It rains.\n\n"
        "Ilse Marrow was a cartographer of the coast.\n",
        "text",
        "t",
    )
    qa = template_qa([doc])
    assert {
        "instruction": "What is Varnholt?",
        "input": "",
        "output": "Varnholt is a harbour town founded in 1712.",
    } in qa
    assert qa[1]["instruction"] == "Who was Ilse Marrow?"
    assert any(r["instruction"] == "What does t say about Varnholt?" for r in qa)
    assert template_qa([Document("c.py", "X is 1.", "python")]) == []


def test_keywords_prefer_rare_terms() -> None:
    chunks = [Chunk("a#0", "a", "The copper mine of Quellbrook. The mine is deep."), Chunk("b#0", "b", "The mine.")]
    assert keywords(chunks, 2)[0] == ["copper", "quellbrook"]
    assert keyword_records(chunks, 1)[0]["instruction"] == "Write a passage about: copper."


def test_generated_qa_parses_and_counts_failures() -> None:
    assert parse_qa("Question: Who?\nAnswer: Ilse.") == ("Who?", "Ilse.")
    assert parse_qa("no idea") is None
    chunks = [Chunk("a#0", "a", "x"), Chunk("b#0", "b", "y")]
    records, failed = generated_qa(chunks, lambda prompts: ["Question: Q1\nAnswer: A1", "rambling"])
    assert records == [{"instruction": "Q1", "input": "", "output": "A1"}] and failed == 1


def test_summary_function_pairs() -> None:
    src = (
        "def documented(a):\n    '''Add one to a.\n\n    Long details.'''\n    return a + 1\n\n\n"
        "class K:\n    def method(self):\n        return 2\n\n\ndef only_doc():\n    '''Nothing else.'''\n"
    )
    doc = Document("m.py", src, "python")
    assert [f.name for f in functions(doc)] == ["documented", "method"]
    records, skipped = code_records([doc])
    assert records == [
        {
            "instruction": "Write a Python function: Add one to a.",
            "input": "",
            "output": "def documented(a):\n    return a + 1",
        }
    ]
    assert skipped == 1
    records, skipped = code_records([doc], lambda prompts: ["Returns two.\nmore"] * len(prompts))
    assert records[1]["instruction"] == "Write a Python function: Returns two." and skipped == 0


def test_dedupe_normalises_case_and_space() -> None:
    kept, dropped = dedupe([{"text": "A  b"}, {"text": "a b"}, {"text": "c"}])
    assert kept == [{"text": "A  b"}, {"text": "c"}] and dropped == 1


def test_prepare_writes_sets_card_and_registry(tmp_path: Path) -> None:
    docs = write_corpus(tmp_path / "docs")
    (docs / "dup.txt").write_text("Ilse Marrow was a cartographer who drew the first map of the Sallow coast.\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    card = prepare([docs], out, PrepareSettings(name="kb"))
    sets = card["datasets"]
    assert set(sets) == {"kb_chunks", "kb_qa", "kb_keywords", "kb_code"}
    assert sets["kb_qa"]["duplicates_removed"] == 1  # the same definition sentence in two files
    assert sets["kb_code"]["records"] == 1
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["mine"] == {"file_name": "mine.json"} and info["kb_chunks"]["formatting"] == "text"
    ds = resolve(DatasetSpec(name="kb_qa"), str(out))
    assert ds.format == "alpaca" and ds.files == [out / "kb_qa.jsonl"]
    assert "| `kb_qa` | alpaca |" in (out / "kb_data_card.md").read_text()
    with pytest.raises(FileExistsError, match=r"kb_chunks\.jsonl"):
        prepare([docs], out, PrepareSettings(name="kb"))
    with pytest.raises(DataError, match="choose from"):
        prepare([docs], out, PrepareSettings(name="x", recipes=["qa", "summaries"]))


def test_data_prepare_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_corpus(tmp_path / "docs")
    out = tmp_path / "out"
    assert main(["data", "prepare", str(docs), "--out", str(out), "--name", "kb", "--recipes", "chunks,qa"]) == 0
    printed = capsys.readouterr().out
    assert "| `kb_chunks` | text |" in printed and "kb_qa" in printed
    first = json.loads((out / "kb_chunks.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text"}
    assert main(["data", "prepare", str(tmp_path / "nope"), "--out", str(out), "--name", "z"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_data_prepare_with_a_model_writes_model_pairs(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = write_corpus(tmp_path / "docs")
    out = tmp_path / "out"
    args = ["data", "prepare", str(docs), "--out", str(out), "--name", "kb", "--recipes", "qa,code"]
    assert main([*args, "--model", str(tiny_model_dir), "--max-new-tokens", "3"]) == 0
    card = json.loads((out / "kb_data_card.json").read_text())
    qa = card["datasets"]["kb_qa"]
    # a random tiny model writes no parsable pair: every prose chunk's reply is counted as unparsed
    assert qa["model_written"] + qa["model_replies_unparsed"] == 4 and card["model_generated"] is True
    assert "functions_without_summary_skipped" in card["datasets"]["kb_code"]


def test_data_prepare_takes_config_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tuneforge.config import PrepareConfig
    from tuneforge.data.recipes import RECIPES

    assert PrepareConfig().recipes == list(RECIPES)
    docs = write_corpus(tmp_path / "docs")
    out = tmp_path / "out"
    args = ["data", "prepare", str(docs), "prepare.recipes=chunks", "rag.chunk_size=40", "--out", str(out)]
    assert main([*args, "--name", "kb"]) == 0
    card = json.loads((out / "kb_data_card.json").read_text())
    assert set(card["datasets"]) == {"kb_chunks"} and card["chunking"]["size"] == 40
    assert capsys.readouterr().err == ""
    # the old flags still work and name their keys; the same files again need prepare.overwrite
    assert main([*args, "--name", "kb", "--chunk-size", "50"]) == 2
    assert "prepare.overwrite=true" in capsys.readouterr().err
    old = ["--name", "kb", "--chunk-size", "50", "--overwrite", "--recipes", "chunks,qa"]
    assert main(["data", "prepare", str(docs), "--out", str(out), *old]) == 0
    err = capsys.readouterr().err
    assert "--chunk-size is now rag.chunk_size=50" in err and "--overwrite is now prepare.overwrite=true" in err
    card = json.loads((out / "kb_data_card.json").read_text())
    assert set(card["datasets"]) == {"kb_chunks", "kb_qa"} and card["chunking"]["size"] == 50
    # a config file: prepare.name and the chunking keys from it
    config = tmp_path / "prep.yaml"
    config.write_text("prepare: {name: cfg, recipes: [chunks]}\nrag: {chunking: tokens, chunk_size: 40}\n")
    assert main(["data", "prepare", str(docs), "--out", str(out), "--config", str(config)]) == 0
    assert json.loads((out / "cfg_data_card.json").read_text())["chunking"]["mode"] == "tokens"
    # mistakes: an unknown key, no name
    assert main(["data", "prepare", str(docs), "prepare.recipe=qa", "--out", str(out), "--name", "z"]) == 2
    assert "did you mean 'recipes'" in capsys.readouterr().err
    assert main(["data", "prepare", str(docs), "--out", str(out)]) == 2
    assert "--name NAME (prepare.name)" in capsys.readouterr().err
