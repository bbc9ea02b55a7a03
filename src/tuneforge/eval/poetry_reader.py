"""The `poetry` reader: chinese-poetry JSON (tuneforge.data.poetry owns the layout), e.g. the test.json that
`tuneforge data poetry` writes with the held-out titles, or any other poem file of that layout (a folder is
read for its `<split>.json`, as for the other readers).

One Example per poem of a regular form (五言/七言 绝句/律诗, tagged or read from its lines), one per (title,
form): the question is the prompt training uses (data.poetry.prompt), the target the form, the reference the
poem. Poems of other forms (古诗, 词, irregular lines) are not items of this task and are left out.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.poetry import FORMS, prompt, read_poems
from tuneforge.data.schema import DataError
from tuneforge.eval.example import EvalError, Example


def read_poetry(path: Path, split: str) -> list[Example]:
    try:
        poems = read_poems(path)
    except DataError as e:
        raise EvalError(str(e)) from None
    out: list[Example] = []
    seen: set[tuple[str, str]] = set()
    for p in poems:
        if p.kind != "shi" or p.form not in FORMS or (p.title, p.form) in seen:
            continue
        seen.add((p.title, p.form))
        meta = {"title": p.title, "author": p.author, "source": p.source}
        out.append(Example(str(len(out)), prompt(p.title, p.form), p.form, reference=p.text, meta=meta))
    if not out:
        raise EvalError(f"{path} holds no poem of a regular form ({', '.join(FORMS)}): nothing to ask for")
    return out


__all__ = ["read_poetry"]
