"""Data recipes: turn raw documents and code into training sets (`tuneforge data prepare`).

RECIPES is the table of recipes; each writes one file in a platform format:

  chunks     paragraph chunks, format text          -> stage pt (continued pre-training)
  qa         template question–answer pairs, alpaca  (+ one model-written pair per chunk when a model is given)
  keywords   "Write a passage about: k1, k2, k3" -> chunk, alpaca
  code       Python docstring summary -> function, alpaca (model-written summaries for undocumented ones)

REPO_RECIPES mine git repositories (each source is one) instead of reading documents:

  code_review  a repository's history -> LLaMA-Reviewer's three tasks, one alpaca set each
               (<name>_review_necessity, <name>_review_comment, <name>_code_refinement; recipes/code_review.py),
               the newest commits' records apart in <name>_<task>_test.jsonl (not registered: scored, not trained)

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
from tuneforge.data.code_review import TASKS
from tuneforge.data.documents import Chunk, Chunking, Document, chunk_document, read_documents, words
from tuneforge.data.recipes.code import code_records
from tuneforge.data.recipes.code_review import ReviewSettings, Split, code_review_sets
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
TRAINED_FIELDS = ("text", "instruction", "input", "output")  # what a record trains on (the rest is provenance)


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
RepoRecipe = Callable[[Sequence[Path], ReviewSettings], tuple[dict[Any, Split], dict[str, Any]]]
# name -> (builder, the datasets it writes, all alpaca): <name>_<dataset>.jsonl and <name>_<dataset>_test.jsonl
REPO_RECIPES: dict[str, tuple[RepoRecipe, tuple[str, ...]]] = {"code_review": (code_review_sets, TASKS)}


@dataclass
class PrepareSettings:
    name: str
    recipes: list[str] = field(default_factory=lambda: list(RECIPES))
    chunking: Chunking = "paragraph"
    chunk_size: int = 200
    chunk_overlap: int = 32
    overwrite: bool = False
    review: ReviewSettings = field(default_factory=ReviewSettings)

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
            review=ReviewSettings(
                input_style=cfg.prepare.input_style,
                comment_source=cfg.prepare.comment_source,
                holdout=cfg.prepare.holdout,
                negative_ratio=cfg.prepare.negative_ratio,
                max_hunk_lines=cfg.prepare.max_hunk_lines,
            ),
        )


def _key(record: dict[str, Any]) -> str:
    trained = {k: v for k, v in record.items() if k in TRAINED_FIELDS}
    return json.dumps({k: " ".join(v.split()).lower() for k, v in sorted(trained.items())}, ensure_ascii=False)


def dedupe(records: list[Any], seen: set[str] | None = None) -> tuple[list[Any], int]:
    """Drop records whose trained fields equal an earlier one's (or one in `seen`) after whitespace and case
    normalisation; provenance fields (a mined record's commit and file) do not make a copy new."""
    seen = set() if seen is None else set(seen)
    out = []
    for r in records:
        k = _key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out, len(records) - len(out)


def _lengths(records: list[Any]) -> dict[str, float]:
    sizes = [sum(len(words(v)) for k, v in r.items() if k in TRAINED_FIELDS) for r in records]
    if not sizes:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(sizes), "mean": round(sum(sizes) / len(sizes), 1), "max": max(sizes)}


@dataclass
class _Output:
    """One dataset a recipe writes: its records, and for a mined one the held-out records beside it."""

    path: Path
    fmt: str
    records: list[Any]
    extra: dict[str, Any]
    test_path: Path | None = None
    test_records: list[Any] = field(default_factory=list)


def _paths(out: Path, settings: PrepareSettings) -> list[Path]:
    """Every file the recipes would write (an earlier prepare's files are never replaced unasked)."""
    files = [out / f"{settings.name}_{r}.jsonl" for r in settings.recipes if r in RECIPES]
    for recipe in (r for r in settings.recipes if r in REPO_RECIPES):
        for d in REPO_RECIPES[recipe][1]:
            files.append(out / f"{settings.name}_{d}.jsonl")
            if settings.review.holdout > 0:
                files.append(out / f"{settings.name}_{d}_test.jsonl")
    return [*files, out / f"{settings.name}_data_card.md"]


def prepare(
    sources: Sequence[str | Path], out: str | Path, settings: PrepareSettings, generate: Generate | None = None
) -> dict[str, Any]:
    """Run the recipes on `sources` (documents, or git repositories for a REPO_RECIPES one); write the sets,
    dataset_info.json and the card. Everything is built before the first file is written."""
    unknown = [r for r in settings.recipes if r not in RECIPES and r not in REPO_RECIPES]
    if unknown or not settings.recipes:
        raise DataError(f"prepare.recipes {unknown or '[]'}: choose from {', '.join([*RECIPES, *REPO_RECIPES])}")
    out = Path(out)
    existing = [str(p) for p in _paths(out, settings) if p.exists()]
    if existing and not settings.overwrite:
        raise PrepareExistsError(
            f"{', '.join(existing)} already exist; pick another --name or --out, or prepare.overwrite=true"
        )
    card: dict[str, Any] = {"name": settings.name, "sources": [str(s) for s in sources], "model_generated": False}
    outputs = _document_outputs(sources, out, settings, generate, card)
    for recipe in (r for r in settings.recipes if r in REPO_RECIPES):
        outputs |= _repo_outputs(recipe, sources, out, settings, card)
    out.mkdir(parents=True, exist_ok=True)
    entries, card["datasets"] = {}, {}
    for dataset, o in outputs.items():
        _write(o.path, o.records)
        entries[dataset] = {"file_name": o.path.name, "formatting": o.fmt}
        card["datasets"][dataset] = {"file": o.path.name, "format": o.fmt, "records": len(o.records), **o.extra}
        if o.test_path is not None:
            _write(o.test_path, o.test_records)
            card["datasets"][dataset] |= {"test_file": o.test_path.name, "test_records": len(o.test_records)}
    register(out, entries, settings.overwrite)
    (out / f"{settings.name}_data_card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False), "utf-8")
    (out / f"{settings.name}_data_card.md").write_text(card_markdown(card), encoding="utf-8")
    return card


def _write(path: Path, records: list[Any]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _document_outputs(
    sources: Sequence[str | Path], out: Path, settings: PrepareSettings, generate: Generate | None, card: dict[str, Any]
) -> dict[str, _Output]:
    recipes = [r for r in settings.recipes if r in RECIPES]
    if not recipes:
        return {}
    docs = [d for s in sources for d in read_documents(Path(s))]
    chunks = [
        c for d in docs for c in chunk_document(d, settings.chunking, settings.chunk_size, settings.chunk_overlap)
    ]
    card |= {
        "documents": len(docs),
        "chunks": len(chunks),
        "chunking": {"mode": settings.chunking, "size": settings.chunk_size, "overlap": settings.chunk_overlap},
        "model_generated": generate is not None,
    }
    found = {}
    for recipe in recipes:
        build, fmt = RECIPES[recipe]
        records, extra = build(docs, chunks, generate)
        kept, dropped = dedupe(records)
        found[f"{settings.name}_{recipe}"] = _Output(
            out / f"{settings.name}_{recipe}.jsonl",
            fmt,
            kept,
            {"duplicates_removed": dropped, "words_per_record": _lengths(kept), **extra},
        )
    return found


def _repo_outputs(
    recipe: str, sources: Sequence[str | Path], out: Path, settings: PrepareSettings, card: dict[str, Any]
) -> dict[str, _Output]:
    """A mined recipe's sets; a held-out record equal to a training one is dropped (it would score recall)."""
    build, datasets = REPO_RECIPES[recipe]
    sets, mined = build([Path(s) for s in sources], settings.review)
    card["mined"] = mined
    found = {}
    for d in datasets:
        split = sets[d]
        kept, dropped = dedupe(split.train)
        test, test_dropped = dedupe(split.test, {_key(r) for r in kept})
        extra = {"duplicates_removed": dropped, "words_per_record": _lengths(kept), **split.counts}
        if settings.review.holdout > 0:
            extra["test_duplicates_removed"] = test_dropped
        found[f"{settings.name}_{d}"] = _Output(
            out / f"{settings.name}_{d}.jsonl",
            "alpaca",
            kept,
            extra,
            out / f"{settings.name}_{d}_test.jsonl" if settings.review.holdout > 0 else None,
            test,
        )
    return found


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
    lines = [f"# Data card: {card['name']}", "", f"Sources: {', '.join(card['sources'])}."]
    if "documents" in card:
        lines[-1] += (
            f" {card['documents']} documents, {card['chunks']} chunks ({card['chunking']['mode']}, up to "
            f"{card['chunking']['size']} words). Model-generated pairs: {'yes' if card['model_generated'] else 'no'}."
        )
    if "mined" in card:
        m = card["mined"]
        lines[-1] += (
            f" Mined: {m['commits']} non-merge commits, {m['hunks_kept']} hunks kept ({m['hunks_skipped']} skipped: "
            f"too long, lock or generated files, no change), {m['review_follow_ups']} review follow-up commits, "
            f"{m['held_out_commits']} newest commits held out; input style {m['input_style']}."
        )
    lines += [
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


__all__ = [
    "RECIPES",
    "REPO_RECIPES",
    "PrepareExistsError",
    "PrepareSettings",
    "card_markdown",
    "dedupe",
    "prepare",
    "register",
]
