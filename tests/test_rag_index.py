"""Documents, chunking, the on-disk index (BM25, dense with a deterministic embedder, hybrid) and retrieval metrics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tuneforge.data.documents import Document, chunk_document, paragraphs, read_documents, window
from tuneforge.data.schema import DataError
from tuneforge.rag.index import IndexSettings, RagError, RagIndex, rrf, terms
from tuneforge.rag.metrics import (
    context_precision,
    context_recall,
    recall_at_k,
    reciprocal_rank,
    retrieval_metrics,
)


class HashEmbedder:
    """Deterministic bag-of-words embedder: each word hashes to one of 64 dimensions."""

    name = "hash-64"

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), 64), np.float32)
        for i, t in enumerate(texts):
            for w in terms(t):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
        return out + 1e-6


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cities.md").write_text(
        "# Cities\n\nVarnholt is a harbour town founded by Ilse Marrow in 1712.\n\n"
        "Quellbrook lies in the northern hills and is known for its copper mines.\n",
        encoding="utf-8",
    )
    (folder / "people.txt").write_text(
        "Ilse Marrow was a cartographer who drew the first map of the Sallow coast.\n\n"
        "Tobin Reeve invented the spring lock in Quellbrook.\n",
        encoding="utf-8",
    )
    (folder / "rows.jsonl").write_text(
        json.dumps({"title": "bird", "text": "The amber finch nests only on Corrow island."}) + "\n",
        encoding="utf-8",
    )
    (folder / "facts.csv").write_text("name,colour\nZelk fruit,violet\n", encoding="utf-8")
    (folder / "code.py").write_text(
        '"""Utilities."""\nimport os\n\n\ndef harbour_depth(town):\n    """Depth of a town\'s harbour."""\n'
        "    return 3\n\n\nclass Ledger:\n    pass\n",
        encoding="utf-8",
    )
    return folder


# ---------------------------------------------------------------------------------------------- documents


def test_documents_read_every_type(tmp_path: Path) -> None:
    docs = {d.id: d for d in read_documents(write_corpus(tmp_path / "docs"))}
    assert set(docs) == {"cities.md", "people.txt", "rows.jsonl:row 1", "facts.csv:row 1", "code.py"}
    assert docs["rows.jsonl:row 1"].text == "The amber finch nests only on Corrow island."
    assert docs["facts.csv:row 1"].text == "name: Zelk fruit\ncolour: violet"
    assert docs["code.py"].kind == "python"


def test_bad_inputs_name_the_file_and_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        list(read_documents(bad))
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported document type '.docx'"):
        list(read_documents(tmp_path / "x.docx"))
    with pytest.raises(DataError, match="does not exist"):
        list(read_documents(tmp_path / "missing"))


def test_window_chunks_with_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(10))
    assert window(text, 4, 1) == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert window("a b", 4, 1) == ["a b"]
    assert window("a\n  b c", 2, 0) == ["a\n  b", "c"]  # the text between words is kept


def test_paragraphs_merge_short_and_split_long() -> None:
    text = "a b\n\nc d\n\n" + " ".join(["x"] * 7) + "\n\ne"
    assert paragraphs(text, 5, 1) == ["a b\n\nc d", "x x x x x", "x x x", "e"]


def test_python_chunks_start_at_definitions() -> None:
    doc = Document("m.py", "import os\nX = 1\n\n\ndef f():\n    return 1\n\n\n@dec\ndef g():\n    pass\n", "python")
    chunks = chunk_document(doc, "paragraph", 100, 10)
    assert [c.id for c in chunks] == ["m.py#0", "m.py#1", "m.py#2"]
    assert chunks[0].text == "import os\nX = 1"
    assert chunks[1].text.startswith("def f():")
    assert chunks[2].text.startswith("@dec\ndef g():")


def test_chunking_rejects_bad_sizes() -> None:
    with pytest.raises(DataError, match="overlap < size"):
        chunk_document(Document("a", "x"), "tokens", 4, 4)


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with a text layer, written by hand (no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_pdf_text_is_read(tmp_path: Path) -> None:
    (tmp_path / "bird.pdf").write_bytes(minimal_pdf("The amber finch nests on Corrow island."))
    assert [d.text for d in read_documents(tmp_path / "bird.pdf")] == ["The amber finch nests on Corrow island."]
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 nothing")
    with pytest.raises(DataError, match=r"broken.pdf: cannot read this PDF|broken.pdf: the PDF has no"):
        list(read_documents(tmp_path / "broken.pdf"))


# ---------------------------------------------------------------------------------------------- index


def test_bm25_dense_hybrid_search_and_reload(tmp_path: Path) -> None:
    emb = HashEmbedder()
    index = RagIndex.create(tmp_path / "idx", IndexSettings(chunk_size=50), emb)
    report = index.add(write_corpus(tmp_path / "docs"))
    assert len(report.added) == 5 and report.chunks_embedded == len(index.chunks)
    for mode in ("bm25", "dense", "hybrid"):
        hits = index.search("who invented the spring lock", k=2, mode=mode)  # type: ignore[arg-type]
        assert hits[0].chunk.id == "people.txt#0", mode
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert len(hits) == (1 if mode == "bm25" else 2)  # bm25 leaves out chunks sharing no term
    again = RagIndex.open(tmp_path / "idx", embedder=HashEmbedder())
    assert [c.id for c in again.chunks] == [c.id for c in index.chunks]
    assert again.search("amber finch nests", k=1, mode="hybrid")[0].chunk.id == "rows.jsonl:row 1#0"


def test_adding_embeds_only_new_or_changed_files(tmp_path: Path) -> None:
    docs = write_corpus(tmp_path / "docs")
    index = RagIndex.create(tmp_path / "idx", IndexSettings(), HashEmbedder())
    index.add(docs)
    emb = HashEmbedder()
    index = RagIndex.open(tmp_path / "idx", embedder=emb)
    (docs / "new.txt").write_text("The glass bell of Varnholt rings at dawn.", encoding="utf-8")
    (docs / "people.txt").write_text("Tobin Reeve moved to Varnholt and opened a bakery.", encoding="utf-8")
    report = index.add(docs)
    assert report.added == ["new.txt"] and report.updated == ["people.txt"] and len(report.unchanged) == 4
    assert emb.texts == 2  # one chunk each: nothing else re-embedded
    reloaded = RagIndex.open(tmp_path / "idx", embedder=HashEmbedder())
    ids = [c.id for c in reloaded.chunks]
    assert ids.count("people.txt#0") == 1 and "people.txt#1" not in ids
    assert reloaded.dense.ntotal == len(ids)
    assert reloaded.search("bakery", k=1, mode="dense")[0].chunk.text.startswith("Tobin Reeve moved")
    assert reloaded.search("bakery", k=1, mode="bm25")[0].chunk.id == "people.txt#0"


def test_index_errors(tmp_path: Path) -> None:
    with pytest.raises(RagError, match="not a tuneforge index"):
        RagIndex.open(tmp_path)
    sparse = RagIndex.create(tmp_path / "s", IndexSettings(), None)
    sparse.add(write_corpus(tmp_path / "docs"))
    with pytest.raises(RagError, match="no dense part"):
        RagIndex.open(tmp_path / "s").search("x", mode="dense")
    with pytest.raises(RagError, match="exists and is not empty"):
        RagIndex.create(tmp_path / "s", IndexSettings(), None)
    with pytest.raises(RagError, match="built with embedder 'hash-64'"):

        class Other(HashEmbedder):
            name = "other"

        RagIndex.create(tmp_path / "d", IndexSettings(), HashEmbedder()).add(tmp_path / "docs")
        RagIndex.open(tmp_path / "d", embedder=Other())
    assert RagIndex.open(tmp_path / "s").search("zzzz unknown", mode="bm25") == []


def test_rrf_golden() -> None:
    # a: 1/61 + 1/62; b: 1/62 + 1/61; c: 1/63; d: 1/63 -> ties broken by id
    fused = rrf([["a", "b", "c"], ["b", "a", "d"]], k=60)  # type: ignore[list-item]
    assert [x for x, _ in fused] == ["a", "b", "c", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[2][1] == pytest.approx(1 / 63)


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_golden() -> None:
    retrieved = ["x", "g1", "y", "g2", "z"]
    gold = {"g1", "g2", "g3"}
    assert recall_at_k(retrieved, gold, 1) == 0.0
    assert recall_at_k(retrieved, gold, 2) == pytest.approx(1 / 3)
    assert recall_at_k(retrieved, gold, 5) == pytest.approx(2 / 3)
    assert reciprocal_rank(retrieved, gold) == 0.5
    assert reciprocal_rank(["x"], gold) == 0.0
    # gold at ranks 2 and 4: (1/2 + 2/4) / 2
    assert context_precision(retrieved, gold) == pytest.approx(0.5)
    assert context_precision(["g1", "g2", "x"], gold) == 1.0
    assert context_recall(retrieved, gold) == pytest.approx(2 / 3)
    means = retrieval_metrics([(retrieved, gold), (["g"], {"g"})], ks=(1,))
    assert means == pytest.approx(
        {"recall@1": 0.5, "mrr": 0.75, "context_precision": 0.75, "context_recall": (2 / 3 + 1) / 2}
    )
    with pytest.raises(ValueError, match="gold chunk"):
        recall_at_k(["a"], set(), 1)
