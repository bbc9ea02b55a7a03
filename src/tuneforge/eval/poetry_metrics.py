"""What a poet checks in a generated 绝句 or 律诗: form, rhyme, repeated lines, distinct-2 (docs/recipes/poetry.md).

Lines are split as tuneforge.data.poetry splits the training poems (，。！？；、 ,.!?; and line breaks). A first line
that only names the requested title (`《春曉》`, `春曉`) is a heading, not a line of the poem.

Rhyme: the last characters of the even lines (2, 4, 6, 8) of the first 4 (绝句) or 8 (律诗) lines, read by pypinyin
as finals (strict: 鱼 yu is `v`, 有 you is `iou`). `rhyme_strict` wants one final shared by all of them,
`rhyme` one group of the 十三辙 (the thirteen rhyme groups of Northern Chinese folk song and opera, e.g. as listed
at zh.wikipedia.org/wiki/十三辙): 霜 uang and 鄉 iang rhyme (江阳), 鳥 iao and 少 ao (遥条). A character rhymes
through any of its readings (pypinyin's heteronyms: 斜 is xie and xia, so it rhymes with 家 and 花 as it did in
Tang verse); readings are modern Mandarin, not the 平水韵 of the Tang poets, and tones (平仄) are not checked.
A rhyme character pypinyin cannot read (a rare character, □) makes the poem's rhyme unscorable: it counts in
neither the numerator nor the denominator, and `rhyme_unreadable` is set in its prediction.

pypinyin is the optional extra `tuneforge[poetry]`; it is imported when a poetry task is built, so a missing one
stops the evaluation before any model loads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.data.poetry import FORMS, clean_line, split_lines
from tuneforge.eval.example import EvalError
from tuneforge.eval.metrics import MetricRows, mean_rows

POETRY_EXTRA = "pip install 'tuneforge[poetry]'"
# CJK ideographs (the basic block, extension A, the compatibility block, extensions B-H) and □, a lost character
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f□]")
# 十三辙 -> pypinyin's strict finals (ü written v); -i of zhi/chi/shi/ri/zi/ci/si is pypinyin's `i`, in 一七.
RHYME_GROUPS: dict[str, tuple[str, ...]] = {
    "发花": ("a", "ia", "ua"),
    "梭波": ("o", "e", "uo", "io"),
    "乜斜": ("ie", "ve", "ê"),
    "一七": ("i", "v", "er"),
    "姑苏": ("u",),
    "怀来": ("ai", "uai"),
    "灰堆": ("ei", "uei"),
    "遥条": ("ao", "iao"),
    "由求": ("ou", "iou"),
    "言前": ("an", "ian", "uan", "van"),
    "人辰": ("en", "in", "uen", "vn"),
    "江阳": ("ang", "iang", "uang"),
    "中东": ("eng", "ing", "ueng", "ong", "iong"),
}
GROUP_OF: dict[str, str] = {final: group for group, finals in RHYME_GROUPS.items() for final in finals}


def require_pypinyin() -> Any:
    try:
        import pypinyin
    except ModuleNotFoundError:
        raise EvalError(f"the poetry task reads rhymes with pypinyin, which is not installed: {POETRY_EXTRA}") from None
    return pypinyin


def finals(char: str) -> frozenset[str]:
    """pypinyin's strict finals of every reading of `char`; empty when it has no reading (rare character, □)."""
    pypinyin = require_pypinyin()
    got = pypinyin.pinyin(char, style=pypinyin.Style.FINALS, strict=True, heteronym=True, errors=lambda _: None)
    return frozenset(f for f in (got[0] if got else []) if f)


@dataclass(frozen=True)
class Rhyme:
    ends: tuple[str, ...]  # the even lines' last characters
    strict: bool  # one final shared by all
    grouped: bool  # one 十三辙 group shared by all
    unreadable: tuple[str, ...]  # Chinese end characters without a reading: the rhyme is not scored


def rhyme(lines: Sequence[str], n_lines: int) -> Rhyme:
    """The rhyme of the even lines among the first `n_lines`; fewer than two even lines do not rhyme, nor does a
    line ending in anything but a Chinese character (a Latin letter, a digit)."""
    ends = tuple(line[-1] for line in lines[:n_lines][1::2])
    readings = [finals(c) if HAN.match(c) else frozenset() for c in ends]
    unreadable = tuple(c for c, r in zip(ends, readings, strict=True) if not r and HAN.match(c))
    if len(ends) < 2 or unreadable or not all(readings):
        return Rhyme(ends, False, False, unreadable)
    shared = frozenset.intersection(*readings)
    groups = [frozenset(GROUP_OF.get(f, f) for f in r) for r in readings]  # a final outside the table: itself
    return Rhyme(ends, bool(shared), bool(frozenset.intersection(*groups)), unreadable)


def poem_lines(text: str, title: str | None = None) -> list[str]:
    """The generated poem's lines, without a first line that only names the title."""
    lines = split_lines(text)
    if lines and title is not None and lines[0] == clean_line(title):
        lines = lines[1:]
    return lines


def bigrams(lines: Sequence[str]) -> list[str]:
    """Character bigrams inside each line (none across a line break)."""
    return [line[i : i + 2] for line in lines for i in range(len(line) - 1)]


def distinct_rows(per_item: Sequence[Sequence[str]]) -> MetricRows:
    """Corpus-level distinct-2 (Li et al. 2016): distinct bigrams over all generations / all bigrams. Rows are
    item indices, so a bootstrap resample recomputes it on the poems drawn (a poem drawn twice repeats its
    bigrams: resampled values lie a little below the point value; paired differences are unaffected in kind)."""
    table = [list(b) for b in per_item]

    def reduce(rows: np.ndarray) -> float:
        grams = [g for i in rows[:, 0] for g in table[int(i)]]
        return len(set(grams)) / len(grams) if grams else 0.0

    return MetricRows(np.arange(len(table), dtype=float).reshape(-1, 1), reduce)


def ratio_rows(pairs: Sequence[tuple[float, float]]) -> MetricRows:
    """Rows [hits, counted]: sum(hits) / sum(counted) over the items, so unscorable items (0, 0) count in neither."""
    rows = np.asarray(pairs, dtype=float).reshape(-1, 2)
    return MetricRows(rows, lambda r: float(r[:, 0].sum() / r[:, 1].sum()) if r[:, 1].sum() else float("nan"))


def score_poem(text: str, form_name: str, title: str | None = None) -> dict[str, Any]:
    """One generated poem against the requested form: the per-item figures and what they were computed from."""
    form = FORMS[form_name]
    lines = poem_lines(text, title)
    right_length = [len(line) == form.chars for line in lines]
    r = rhyme(lines, form.lines)
    repeated = sorted(line for line, n in Counter(lines).items() if n > 1)
    return {
        "lines": lines,
        "line_count": float(len(lines) == form.lines),
        "line_length": float(np.mean(right_length)) if lines else 0.0,
        "form": float(len(lines) == form.lines and all(right_length)),
        "rhyme_ends": "".join(r.ends),
        "rhyme": r.grouped,
        "rhyme_strict": r.strict,
        "rhyme_unreadable": "".join(r.unreadable),
        "repeated_lines": repeated,
        "bigrams": bigrams(lines),
    }


METRICS = ("form", "line_count", "line_length", "rhyme", "rhyme_strict", "no_repeat", "distinct_2")


def poetry_rows(scored: Sequence[dict[str, Any]]) -> dict[str, MetricRows]:
    """The task's metrics from score_poem's figures, one row per item (METRICS, in that order)."""

    def rhymes(key: str) -> list[tuple[float, float]]:
        return [(0.0, 0.0) if s["rhyme_unreadable"] else (float(s[key]), 1.0) for s in scored]

    return {
        "form": mean_rows([s["form"] for s in scored]),
        "line_count": mean_rows([s["line_count"] for s in scored]),
        "line_length": mean_rows([s["line_length"] for s in scored]),
        "rhyme": ratio_rows(rhymes("rhyme")),
        "rhyme_strict": ratio_rows(rhymes("rhyme_strict")),
        "no_repeat": mean_rows([float(not s["repeated_lines"]) for s in scored]),
        "distinct_2": distinct_rows([s["bigrams"] for s in scored]),
    }


__all__ = [
    "GROUP_OF",
    "METRICS",
    "POETRY_EXTRA",
    "RHYME_GROUPS",
    "Rhyme",
    "bigrams",
    "distinct_rows",
    "finals",
    "poem_lines",
    "poetry_rows",
    "ratio_rows",
    "require_pypinyin",
    "rhyme",
    "score_poem",
]
