"""The `poetry` task type: write a poem of the requested regular form for each held-out title, then score what a
poet checks (tuneforge.eval.poetry_metrics): `form` (primary: the line count and every line's length),
`line_count`, `line_length`, `rhyme` (the even lines share a 十三辙 group), `rhyme_strict` (one pypinyin final),
`no_repeat` (no line twice) and `distinct_2` (corpus-level distinct character bigrams). Greedy generation from
the prompt training uses, through the chat template. Imported by tuneforge.eval.tasks after its base classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tuneforge.config import TaskSpec
from tuneforge.data.poetry import FORMS
from tuneforge.eval.poetry_metrics import poetry_rows, require_pypinyin, score_poem
from tuneforge.eval.prompts import Item
from tuneforge.eval.readers import EvalError, Example
from tuneforge.eval.tasks import CHAT, Response, TaskScores, _Generating


class PoetryTask(_Generating):
    settings = CHAT | {"max_new_tokens"}
    formats = frozenset({"poetry"})
    primary = "form"
    default_new_tokens = 160  # a 七言律诗 is 56 characters + 8 marks + line breaks, ~2 tokens a character

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        require_pypinyin()  # before any model loads
        bad = next((e for e in examples if e.target not in FORMS), None)
        if bad is not None:
            raise EvalError(f"item {bad.id} of {spec.path}: form {bad.target!r} is not one of {', '.join(FORMS)}")

    @property
    def headline(self) -> tuple[str, ...]:
        return ("form", "rhyme", "no_repeat", "distinct_2")

    def _shot_answer(self, ex: Example) -> str:
        return ex.reference or ""

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        scored, preds = [], []
        for item, r in zip(items, responses, strict=True):
            ex = item.example
            s = score_poem(r.text, ex.target, ex.meta.get("title"))
            scored.append(s)
            pred: dict[str, Any] = {"id": ex.id, "title": ex.meta.get("title"), "form": ex.target, "text": r.text}
            pred |= {("form_ok" if k == "form" else k): v for k, v in s.items() if k != "bigrams"}
            preds.append(pred)
        return TaskScores(poetry_rows(scored), preds)


__all__ = ["PoetryTask"]
