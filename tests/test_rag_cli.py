"""`tuneforge rag index|search|chat` on tiny inputs; RAG prompts through the chat template; MiniLM (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_rag_index import write_corpus
from tuneforge.cli import main
from tuneforge.data.render import render_prompt
from tuneforge.rag.index import Hit, IndexSettings, RagIndex
from tuneforge.rag.pipeline import cited_ids, rag_messages


def test_index_search_and_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = write_corpus(tmp_path / "docs")
    idx = tmp_path / "idx"
    assert main(["rag", "index", "rag.embedder=none", "--docs", str(docs), "--index", str(idx)]) == 0
    assert "5 files added" in capsys.readouterr().out
    assert main(["rag", "search", "copper mines", "--index", str(idx), "--mode", "bm25", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. [cities.md#0]")
    assert main(["rag", "index", "rag.embedder=none", "--docs", str(docs), "--index", str(idx)]) == 0
    assert "0 files added, 0 updated, 5 unchanged" in capsys.readouterr().out
    # other chunking settings on an existing index are refused, naming them
    assert main(["rag", "index", "rag.chunking=tokens", "--docs", str(docs), "--index", str(idx)]) == 2
    assert "chunking=paragraph" in capsys.readouterr().err
    assert main(["rag", "search", "x", "--index", str(tmp_path / "none")]) == 2
    assert "not a tuneforge index" in capsys.readouterr().err
    assert main(["rag", "index", "rag.chunk_overlap=300"]) == 2
    assert "chunk_overlap" in capsys.readouterr().err


def test_rag_chat_with_a_model_cites_sources(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = write_corpus(tmp_path / "docs")
    idx = tmp_path / "idx"
    assert main(["rag", "index", "rag.embedder=none", "--docs", str(docs), "--index", str(idx)]) == 0
    capsys.readouterr()
    args = ["rag", "chat", "who invented the spring lock?", "rag.max_new_tokens=4", "--index", str(idx)]
    assert main([*args, "--mode", "bm25", "--model", str(tiny_model_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sources"][0]["id"] == "people.txt#0"
    assert isinstance(result["answer"], str) and isinstance(result["cited"], list)


def test_passages_go_through_the_chat_template(chatml_tokenizer, tmp_path: Path) -> None:
    index = RagIndex.create(tmp_path / "i", IndexSettings(), None)
    index.add(write_corpus(tmp_path / "docs"))
    hits = index.search("spring lock Quellbrook", k=2, mode="bm25")
    messages = rag_messages("Who invented the spring lock?", hits)
    text = chatml_tokenizer.decode(render_prompt(chatml_tokenizer, messages))
    assert "<|im_start|>user\nPassages:\n[1] (people.txt#0)" in text
    assert text.rstrip().endswith("<|im_start|>assistant")
    assert cited_ids("Tobin Reeve [1], see also [2, 1] and [7].", hits) == (hits[0].chunk.id, hits[1].chunk.id)
    assert cited_ids(f"As ({hits[1].chunk.id}) says: Tobin Reeve.", hits) == (hits[1].chunk.id,)
    assert cited_ids("Tobin Reeve.", hits) == ()


def _hit_ids(hits: list[Hit]) -> list[str]:
    return [h.chunk.id for h in hits]


@pytest.mark.slow
def test_minilm_dense_search(tmp_path: Path) -> None:
    from tuneforge.rag.index import MiniLM

    index = RagIndex.create(tmp_path / "i", IndexSettings(), MiniLM())
    index.add(write_corpus(tmp_path / "docs"))
    # no word in common with the passage: only the dense part can find it
    assert _hit_ids(index.search("which bird breeds on an isle?", k=1, mode="dense")) == ["rows.jsonl:row 1#0"]
    assert index.search("which bird breeds on an isle?", k=1, mode="bm25") == []
    assert _hit_ids(index.search("who made a map of the coast", k=1, mode="hybrid")) == ["people.txt#0"]
    assert RagIndex.open(tmp_path / "i").embedder.name == "all-MiniLM-L6-v2"  # type: ignore[union-attr]
