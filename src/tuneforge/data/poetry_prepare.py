"""`tuneforge data poetry SRC... --out DIR`: chinese-poetry JSON -> the poetry recipe's training and held-out files.

Written into a new folder (an existing, non-empty one is refused, never overwritten):

  pt.jsonl     {"text": title \\n author \\n poem}, one training poem per line: stage pt, format text
  sft.jsonl    {"instruction": prompt (title, and form when known), "output": poem}: stage sft, format alpaca
  corpus.txt   one training poem per line (title, author, lines, space-separated): vocab.corpus of stage pt
  test.json    the held-out poems of a regular form, chinese-poetry layout (`tags` carry the form): eval task
               type poetry, format poetry
  split.json   the seed, the held-out titles, counts and the sha256 of every source file

The held-out split: `held_out` titles are drawn (random.Random(seed)) from the shi titles that have a poem of a
regular form (五言/七言 绝句/律诗). Training never sees them: every poem under a held-out title is left out of
pt, sft and corpus, and so is every other poem sharing a line with a held-out poem (the same poem under another
title: 唐诗三百首's 江南詞 is 全唐诗's 相和歌辭 江南曲). Training poems that repeat one already taken (same title
and lines, e.g. a 唐诗三百首 poem also in 全唐诗) are written once. The files are written to a temporary sibling
and renamed into place, so a stopped run leaves no half folder behind.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tuneforge.data.poetry import FORMS, Poem, poem_files, pretraining_text, prompt, read_poems
from tuneforge.data.schema import DataError

FILES = ("pt.jsonl", "sft.jsonl", "corpus.txt", "test.json", "split.json")


def draw_titles(poems: Sequence[Poem], n: int, seed: int) -> list[str]:
    """`n` shi titles with a regular-form poem, a seeded draw (sorted); fewer candidates than n is an error."""
    candidates = sorted({p.title for p in poems if p.kind == "shi" and p.form in FORMS})
    if n >= len(candidates):
        raise DataError(
            f"held-out titles: {n} asked, but the poems have {len(candidates)} titles of a regular form; "
            "hold out fewer (--n) so some are left to train on"
        )
    return sorted(random.Random(seed).sample(candidates, n))


def split_poems(poems: Sequence[Poem], titles: Iterable[str]) -> tuple[list[Poem], list[Poem], dict[str, int]]:
    """(training poems, held-out poems, counts): held out = a held-out title; left out of training as well =
    sharing a line with a held-out poem; duplicates (title + lines) kept once."""
    held_titles = set(titles)
    held = [p for p in poems if p.kind == "shi" and p.title in held_titles]
    held_lines = {line for p in held for line in p.lines}
    train: list[Poem] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    counts = {"shares_a_held_out_line": 0, "duplicates": 0}
    for p in poems:
        if p.kind == "shi" and p.title in held_titles:
            continue
        if any(line in held_lines for line in p.lines):
            counts["shares_a_held_out_line"] += 1
            continue
        key = (p.title, p.lines)
        if key in seen:
            counts["duplicates"] += 1
            continue
        seen.add(key)
        train.append(p)
    return train, held, counts


def held_out_records(held: Sequence[Poem]) -> list[dict[str, Any]]:
    """The held-out poems of a regular form, one per (title, form): their prompts would be the same."""
    out, seen = [], set()
    for p in held:
        if p.form in FORMS and (p.title, p.form) not in seen:
            seen.add((p.title, p.form))
            tags = list(p.tags) if p.form in p.tags else [*p.tags, str(p.form)]
            out.append({"author": p.author, "title": p.title, "paragraphs": list(p.paragraphs), "tags": tags})
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def refuse_existing(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(
            f"{out} already exists{' and is not empty' if out.is_dir() else ''}: a poetry data folder is never "
            "overwritten; choose another --out, or delete it first"
        )


def prepare_poetry(sources: Sequence[Path], out: Path, held_out: int = 100, seed: int = 0) -> dict[str, Any]:
    """Read the poems of `sources` (files or folders), split off `held_out` titles, write the files; the
    summary (split.json) is returned."""
    out = Path(out)
    refuse_existing(out)
    if not sources:
        raise DataError("tuneforge data poetry needs the chinese-poetry files or folders: SRC... --out DIR")
    if held_out < 1:
        raise DataError(f"held-out titles: --n must be at least 1, got {held_out}")
    files = [f for s in sources for f in poem_files(Path(s))]
    poems = [p for s in sources for p in read_poems(Path(s))]
    titles = draw_titles(poems, held_out, seed)
    train, held, counts = split_poems(poems, titles)
    random.Random(f"{seed}/order").shuffle(train)  # PT's validation split and the vocab corpus's 10% mix sources
    tests = held_out_records(held)
    summary = {
        "seed": seed,
        "held_out_titles": titles,
        "poems_read": len(poems),
        "train_poems": len(train),
        "train_by_form": _by_form(train),
        "held_out_poems": len(held),
        "test_items": len(tests),
        "left_out_of_training": counts,
        "sources": {str(f): _sha256(f) for f in files},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _jsonl(tmp / "pt.jsonl", ({"text": pretraining_text(p)} for p in train))
        _jsonl(tmp / "sft.jsonl", ({"instruction": prompt(p.title, p.form, p.kind), "output": p.text} for p in train))
        corpus = (" ".join((p.title, p.author, *p.paragraphs)) for p in train)
        (tmp / "corpus.txt").write_text("".join(line + "\n" for line in corpus), encoding="utf-8")
        (tmp / "test.json").write_text(json.dumps(tests, ensure_ascii=False, indent=1), encoding="utf-8")
        (tmp / "split.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
        refuse_existing(out)  # again: nothing may have appeared there while reading
        if out.exists():
            out.rmdir()  # an empty folder, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _by_form(poems: Sequence[Poem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in poems:
        key = "ci" if p.kind == "ci" else p.form or "other"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def summary_markdown(summary: dict[str, Any]) -> str:
    left = summary["left_out_of_training"]
    forms = ", ".join(f"{k} {v}" for k, v in summary["train_by_form"].items())
    return (
        f"poems read: {summary['poems_read']} from {len(summary['sources'])} files\n"
        f"held out: {len(summary['held_out_titles'])} titles (seed {summary['seed']}), {summary['held_out_poems']} "
        f"poems, {summary['test_items']} test items (regular forms)\n"
        f"left out of training besides: {left['shares_a_held_out_line']} sharing a line with a held-out poem, "
        f"{left['duplicates']} duplicates\n"
        f"training poems: {summary['train_poems']} ({forms})\n"
    )


__all__ = ["FILES", "draw_titles", "held_out_records", "prepare_poetry", "split_poems", "summary_markdown"]
