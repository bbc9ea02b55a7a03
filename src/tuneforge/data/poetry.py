"""The chinese-poetry JSON layout (github.com/chinese-poetry/chinese-poetry): one owner for reading poems, their
lines and forms, and the prompt a poem answers, so preparation (data/poetry_prepare.py), training and the
`poetry` eval task (eval/poetry_task.py) split lines and name forms the same way.

A file is a JSON list of poems; shi (全唐诗, 唐诗三百首) have a `title`, ci (宋词) a `rhythmic` (the tune):

    {"author": "李白", "title": "靜夜思", "paragraphs": ["牀前看月光，疑是地上霜。", "舉頭望山月，低頭思故鄉。"],
     "tags": ["唐诗三百首", "五言绝句"]}

Lines are the pieces between ，。！？；、 (and their ASCII forms, and line breaks). A line's length counts its
characters without punctuation or spaces; the editors' marks are read as the characters they stand for:
`[爽]` (an uncertain reading) is 爽, `{𥫗/戢}` (a character written by its parts) is one character, and □ (a lost
character) is one character. The regular forms (FORMS) are 五言/七言 × 绝句 (4 lines) / 律诗 (8 lines).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.schema import DataError
from tuneforge.data.sources import read_records


@dataclass(frozen=True)
class Form:
    lines: int
    chars: int


# The regular (近体) forms the eval task checks: lines per poem, characters per line.
FORMS: dict[str, Form] = {
    "五言绝句": Form(lines=4, chars=5),
    "七言绝句": Form(lines=4, chars=7),
    "五言律诗": Form(lines=8, chars=5),
    "七言律诗": Form(lines=8, chars=7),
}
# Tags naming a form that is not regular (唐诗三百首 tags 五言古诗, 七言古诗): said in the prompt, never checked.
OTHER_FORM = re.compile(r"^[四五六七杂]言.{1,2}诗$")
LINE_BREAKS = re.compile(r"[，。！？；、,.!?;\r\n]")
_COMPOSED = re.compile(r"\{[^{}]*\}")  # {𥫗/戢}: one character written by its components
_LOST = "□"


def clean_line(piece: str) -> str:
    """A line's characters: a composed character `{...}` counts as one (□), punctuation, symbols and spaces are
    dropped (Unicode categories P, S, Z, C), so `[爽]節在重九` has 5 characters."""
    piece = _COMPOSED.sub(_LOST, piece)
    return "".join(c for c in piece if c == _LOST or unicodedata.category(c)[0] not in "PSZC")


def split_lines(text: str) -> list[str]:
    """The lines of a poem's text (non-empty, cleaned): split on ，。！？；、 ,.!?; and line breaks."""
    return [line for line in (clean_line(p) for p in LINE_BREAKS.split(text)) if line]


def infer_form(lines: Sequence[str]) -> str | None:
    """The regular form whose line count and line length these lines have, else None."""
    return next((name for name, f in FORMS.items() if len(lines) == f.lines and fits(lines, f)), None)


def fits(lines: Sequence[str], form: Form) -> bool:
    return len(lines) == form.lines and all(len(line) == form.chars for line in lines)


@dataclass(frozen=True)
class Poem:
    """One poem as read: `kind` shi (a `title`) or ci (a `rhythmic` tune name); `form` as tagged or inferred."""

    title: str
    author: str
    paragraphs: tuple[str, ...]
    kind: str  # "shi" | "ci"
    form: str | None
    tags: tuple[str, ...] = ()
    source: str = ""
    lines: tuple[str, ...] = field(default=(), compare=False)

    @property
    def text(self) -> str:
        """The poem as the answer to its prompt: its paragraphs, one per line, as the file writes them."""
        return "\n".join(self.paragraphs)


def prompt(title: str, form: str | None, kind: str = "shi") -> str:
    """The user turn a poem answers, in training (SFT) and in the `poetry` eval task alike."""
    if kind == "ci":
        return f"按词牌《{title}》填一首词。"
    return f"以《{title}》为题，写一首{form or '诗'}。"


def pretraining_text(poem: Poem) -> str:
    """One PT sample: title, author, then the poem's lines."""
    return f"{poem.title}\n{poem.author}\n{poem.text}"


def _text_field(record: dict[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"field {key!r} must be non-empty text, got {value!r:.80}")
    return value.strip()


def _form_of(tags: tuple[str, ...], lines: list[str]) -> str | None:
    """The tagged form if the lines fit it (a tag on a poem of other lines is a data error: 唐诗三百首 tags 無題二首
    一 七言律诗 with 6 lines), a tagged non-regular form as tagged, else the form the lines have."""
    tagged = [t for t in tags if t in FORMS or OTHER_FORM.match(t)]
    if tagged:
        tag = tagged[0]
        return tag if tag not in FORMS or fits(lines, FORMS[tag]) else None
    return infer_form(lines)


def poem_of(record: dict[str, Any]) -> Poem:
    """A Poem from one record; a DataError naming the field at fault (the caller adds the file and row)."""
    if not isinstance(record, dict):
        raise DataError(f"a poem must be an object with author, paragraphs and title (or rhythmic), got {record!r:.80}")
    have = ", ".join(map(repr, record)) or "none"
    key = "title" if "title" in record else "rhythmic" if "rhythmic" in record else None
    if key is None:
        raise DataError(f"missing field 'title' (shi) or 'rhythmic' (ci); this record has fields: {have}")
    for need in ("author", "paragraphs"):
        if need not in record:
            raise DataError(f"missing field {need!r}; this record has fields: {have}")
    paragraphs = record["paragraphs"]
    if not isinstance(paragraphs, list) or not paragraphs:
        raise DataError(f"field 'paragraphs' must be a non-empty list of lines, got {paragraphs!r:.80}")
    for i, p in enumerate(paragraphs):
        if not isinstance(p, str):
            raise DataError(f"field 'paragraphs' item {i} must be text, got {type(p).__name__}: {p!r:.60}")
    tags = record.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DataError(f"field 'tags' must be a list of text, got {tags!r:.80}")
    lines = split_lines("\n".join(paragraphs))
    if not lines:
        raise DataError(f"field 'paragraphs' holds no line of text: {paragraphs!r:.80}")
    kind = "shi" if key == "title" else "ci"
    return Poem(
        title=_text_field(record, key),
        author=_text_field(record, "author"),
        paragraphs=tuple(p.strip() for p in paragraphs if p.strip()),
        kind=kind,
        form=_form_of(tuple(tags), lines) if kind == "shi" else None,
        tags=tuple(tags),
        lines=tuple(lines),
    )


def poem_files(path: Path) -> list[Path]:
    """A .json file itself, or a folder's .json files at any depth (全唐诗/, 宋词/), sorted."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise DataError(f"folder {path} holds no .json poem files (the chinese-poetry layout)")
        return files
    if not path.is_file():
        raise DataError(f"poetry file {path} does not exist")
    if path.suffix.lower() != ".json":
        raise DataError(f"{path}: poems are read from the chinese-poetry .json files, not {path.suffix!r}")
    return [path]


def read_poems(path: Path) -> list[Poem]:
    """Every poem of a file or folder; a bad record is a DataError naming its file, row and field."""
    out: list[Poem] = []
    for file in poem_files(Path(path)):
        for source, record in read_records(file):
            try:
                poem = poem_of(record)
            except DataError as e:
                raise DataError(f"{source}: {e}") from None
            out.append(dataclasses.replace(poem, source=source))
    if not out:
        raise DataError(f"{path} holds no poems")
    return out


__all__ = [
    "FORMS",
    "Form",
    "Poem",
    "clean_line",
    "fits",
    "infer_form",
    "poem_files",
    "poem_of",
    "pretraining_text",
    "prompt",
    "read_poems",
    "split_lines",
]
