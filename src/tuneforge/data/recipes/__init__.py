"""Data recipes: turn raw documents and code into training sets (`tuneforge data prepare`).

RECIPES is the table of recipes; each writes one file in a platform format:

  chunks     paragraph chunks, format text          -> stage pt (continued pre-training)
  qa         template question–answer pairs, alpaca  (+ one model-written pair per chunk when a model is given)
  keywords   "Write a passage about: k1, k2, k3" -> chunk, alpaca
  code       Python docstring summary -> function, alpaca (model-written summaries for undocumented ones)

`prepare` writes <out>/<name>_<recipe>.jsonl, registers each as `<name>_<recipe>` in <out>/dataset_info.json
(added to an existing one, never replacing another entry) so `data: {dataset_dir: <out>, datasets: [{name:
<name>_qa}]}` finds it, and writes a data card (<name>_data_card.md / .json: counts, lengths, duplicates
removed).

Settings: a RunConfig (`tuneforge data prepare DOCS [key=value ...]`): its `prepare:` section and the chunking
keys of `rag:` (rag.chunking, rag.chunk_size, rag.chunk_overlap), read by `PrepareSettings.from_config`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.data.documents import Chunk, Chunking, Document, chunk_document, read_documents, words
from tuneforge.data.recipes.code import code_records
from tuneforge.data.recipes.text import (
    Generate,
    Record,
    chunk_records,
    generated_qa,
    keyword_records,
    template_qa,
)
from tuneforge.data.schema import DataError
from tuneforge.errors import TuneforgeError


class PrepareExistsError(TuneforgeError, FileExistsError):
    """`data prepare` would replace files of an earlier one (without prepare.overwrite)."""


RecipeResult = tuple[list[Record], dict[str, int]]  # records, extra counts for the card


def _chunks(docs: Sequence[Document], chunks: Sequence[Chunk], gen: Generate | None) -> RecipeResult:
    return chunk_records(chunks), {}


def _qa(docs: Sequence[Document], chunks: Sequence[Chunk], gen: Generate | None) -> RecipeResult:
    records = template_qa(docs)
    extra = {"template": len(records)}
    if gen is not None:
        written, failed = generated_qa([c for c in chunks if _is_prose(c, docs)], gen)
        records += written
        extra.update(model_written=len(written), model_replies_unparsed=failed)
    return records, extra


def _keywords(docs: Sequence[Document], chunks: Sequence[Chunk], gen: Generate | None) -> RecipeResult:
    return keyword_records([c for c in chunks if _is_prose(c, docs)]), {}


def _code(docs: Sequence[Document], chunks: Sequence[Chunk], gen: Generate | None) -> RecipeResult:
    records, skipped = code_records(docs, gen)
    return records, {"functions_without_summary_skipped": skipped}


def _is_prose(chunk: Chunk, docs: Sequence[Document]) -> bool:
    kinds = {d.id: d.kind for d in docs}
    return kinds.get(chunk.doc_id) == "text"


Recipe = Callable[[Sequence[Document], Sequence[Chunk], Generate | None], RecipeResult]
# name -> (builder, dataset format)
RECIPES: dict[str, tuple[Recipe, str]] = {
    "chunks": (_chunks, "text"),
    "qa": (_qa, "alpaca"),
    "keywords": (_keywords, "alpaca"),
    "code": (_code, "alpaca"),
}


@dataclass
class PrepareSettings:
    name: str
    recipes: list[str] = field(default_factory=lambda: list(RECIPES))
    chunking: Chunking = "paragraph"
    chunk_size: int = 200
    chunk_overlap: int = 32
    overwrite: bool = False

    @classmethod
    def from_config(cls, cfg: RunConfig) -> PrepareSettings:
        if not cfg.prepare.name:
            raise DataError("tuneforge data prepare needs a dataset name: --name NAME (prepare.name)")
        return cls(
            name=cfg.prepare.name,
            recipes=list(cfg.prepare.recipes),
            chunking=cfg.rag.chunking,
            chunk_size=cfg.rag.chunk_size,
            chunk_overlap=cfg.rag.chunk_overlap,
            overwrite=cfg.prepare.overwrite,
        )


def _key(record: Record) -> str:
    return json.dumps({k: " ".join(v.split()).lower() for k, v in sorted(record.items())}, ensure_ascii=False)


def dedupe(records: list[Record]) -> tuple[list[Record], int]:
    """Drop records equal to an earlier one after whitespace and case normalisation."""
    seen: set[str] = set()
    out = []
    for r in records:
        k = _key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out, len(records) - len(out)


def _lengths(records: list[Record]) -> dict[str, float]:
    sizes = [sum(len(words(v)) for v in r.values()) for r in records]
    if not sizes:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(sizes), "mean": round(sum(sizes) / len(sizes), 1), "max": max(sizes)}


def prepare(
    sources: Sequence[str | Path], out: str | Path, settings: PrepareSettings, generate: Generate | None = None
) -> dict[str, Any]:
    """Run the recipes on every document under `sources`; write the sets, dataset_info.json and the card."""
    unknown = [r for r in settings.recipes if r not in RECIPES]
    if unknown or not settings.recipes:
        raise DataError(f"prepare.recipes {unknown or '[]'}: choose from {', '.join(RECIPES)}")
    out = Path(out)
    targets = {r: out / f"{settings.name}_{r}.jsonl" for r in settings.recipes}
    existing = [str(p) for p in [*targets.values(), out / f"{settings.name}_data_card.md"] if p.exists()]
    if existing and not settings.overwrite:
        raise PrepareExistsError(
            f"{', '.join(existing)} already exist; pick another --name or --out, or prepare.overwrite=true"
        )
    docs = [d for s in sources for d in read_documents(Path(s))]
    chunks = [
        c for d in docs for c in chunk_document(d, settings.chunking, settings.chunk_size, settings.chunk_overlap)
    ]
    card: dict[str, Any] = {
        "name": settings.name,
        "sources": [str(s) for s in sources],
        "documents": len(docs),
        "chunks": len(chunks),
        "chunking": {"mode": settings.chunking, "size": settings.chunk_size, "overlap": settings.chunk_overlap},
        "model_generated": generate is not None,
        "datasets": {},
    }
    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for recipe, path in targets.items():
        build, fmt = RECIPES[recipe]
        records, extra = build(docs, chunks, generate)
        kept, dropped = dedupe(records)
        with path.open("w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        dataset = f"{settings.name}_{recipe}"
        entries[dataset] = {"file_name": path.name, "formatting": fmt}
        card["datasets"][dataset] = {
            "file": path.name,
            "format": fmt,
            "records": len(kept),
            "duplicates_removed": dropped,
            "words_per_record": _lengths(kept),
            **extra,
        }
    register(out, entries, settings.overwrite)
    (out / f"{settings.name}_data_card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False), "utf-8")
    (out / f"{settings.name}_data_card.md").write_text(card_markdown(card), encoding="utf-8")
    return card


def register(folder: Path, entries: dict[str, dict[str, str]], overwrite: bool) -> None:
    """Add entries to folder/dataset_info.json (LLaMA-Factory's registry file), keeping every other entry."""
    info_path = folder / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(
                f"{info_path}:{e.lineno}: not valid JSON ({e.msg}); fix it or choose another --out (prepare.out)"
            ) from None
    clash = [k for k in entries if k in info and info[k] != entries[k]]
    if clash and not overwrite:
        raise PrepareExistsError(
            f"{info_path} already defines {', '.join(clash)} differently; replace them with prepare.overwrite=true"
        )
    info.update(entries)
    info_path.write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# Data card: {card['name']}",
        "",
        f"Sources: {', '.join(card['sources'])}. {card['documents']} documents, {card['chunks']} chunks "
        f"({card['chunking']['mode']}, up to {card['chunking']['size']} words). "
        f"Model-generated pairs: {'yes' if card['model_generated'] else 'no'}.",
        "",
        "| dataset | format | records | duplicates removed | words per record (min / mean / max) | notes |",
        "|---|---|---:|---:|---|---|",
    ]
    for name, d in card["datasets"].items():
        n = d["words_per_record"]
        notes = ", ".join(
            f"{k.replace('_', ' ')}: {v}"
            for k, v in d.items()
            if k not in {"file", "format", "records", "duplicates_removed", "words_per_record"}
        )
        lines.append(
            f"| `{name}` | {d['format']} | {d['records']} | {d['duplicates_removed']} | "
            f"{n['min']} / {n['mean']} / {n['max']} | {notes} |"
        )
    return "\n".join(lines) + "\n"


__all__ = ["RECIPES", "PrepareExistsError", "PrepareSettings", "card_markdown", "dedupe", "prepare", "register"]
