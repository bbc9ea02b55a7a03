"""The code-review task types (LLaMA-Reviewer, Lu et al. 2023; CodeReviewer, Li et al. 2022) on `codereviewer`
items. The prompt is the user turn the `code_review` recipe trains on (tuneforge.data.code_review, in the
task's `input_style`), through the chat template.

  review_necessity  log-likelihood of the answers "yes" and "no" as training labels them (the template's text
                    after the assistant header, to the end of the turn); "yes" (needs a comment) is the positive class:
                    `f1`, `precision`, `recall`, `accuracy`, and `auc` of P(yes) when both classes are there
  review_comment    greedy comment vs `msg`: `bleu4`, CodeReviewer's smoothed sentence BLEU-4 (metrics.bleu4_rows)
  code_refinement   greedy code vs `new`: `bleu4`, and `exact_match` after CodeReviewer's whitespace folding

Imported by tuneforge.eval.tasks after its base classes, into TASK_TYPES.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from tuneforge.config import TaskSpec
from tuneforge.data.code_review import ANSWERS, Task, code_lines, necessity_answer, user_turn
from tuneforge.data.render import trained_answer_ids
from tuneforge.eval import metrics as m
from tuneforge.eval.lm import LM
from tuneforge.eval.prompts import Item, chat, prompt_ids
from tuneforge.eval.readers import EvalError, Example
from tuneforge.eval.tasks import COMMON, Request, Response, TaskScores, _Base, _Generating

NO, YES = ANSWERS.index("no"), ANSWERS.index("yes")


class _Review(_Base):
    settings = COMMON | {"system", "input_style"}
    formats = frozenset({"codereviewer"})
    task: ClassVar[Task]
    needs: ClassVar[tuple[str, ...]]  # the item fields this type reads; text fields must not be empty

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        for ex in examples:
            for key in self.needs:
                value = ex.meta.get(key)
                if value is None or (isinstance(value, str) and not value.strip()):
                    said = "no field" if value is None else "an empty field"
                    raise EvalError(f"{ex.meta.get('source', ex.id)}: {said} {key!r}, which a {spec.type} item needs")

    def _question(self, ex: Example) -> str:
        code = ex.meta["old"] if self.task == "code_refinement" else ex.meta["patch"]
        return user_turn(self.task, self.spec.input_style or "instruction", code, ex.meta.get("comment"))


class ReviewNecessityTask(_Review):
    task = "review_necessity"
    needs = ("patch", "y")
    primary = "f1"

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        if examples and not any(e.meta["y"] for e in examples):
            raise EvalError(f"{spec.path}: no item has y=1; F1 of 'needs a comment' needs some that do")

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        out = []
        for item in items:
            messages = chat(self.spec, item, self._question, lambda e: necessity_answer(bool(e.meta["y"])))
            ctx = prompt_ids(lm.tokenizer, messages)
            out.append(Request(tuple((ctx, trained_answer_ids(lm.tokenizer, messages, a)) for a in ANSWERS)))
        return out

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        pred, gold, p_yes, preds = [], [], [], []
        for item, r in zip(items, responses, strict=True):
            d = r.scores[YES].logprob - r.scores[NO].logprob
            p = 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))
            pred.append(d > 0)
            gold.append(bool(item.example.meta["y"]))
            p_yes.append(p)
            preds.append({"id": item.example.id, "gold": ANSWERS[gold[-1]], "pred": ANSWERS[pred[-1]], "p_yes": p})
        metrics: dict[str, m.MetricRows] = m.binary_rows(pred, gold)
        metrics["accuracy"] = m.mean_rows([float(p == g) for p, g in zip(pred, gold, strict=True)])
        if len(set(gold)) == 2:
            metrics["auc"] = m.auc_rows(p_yes, [int(g) for g in gold])
        return TaskScores(metrics, preds)


class _ReviewGenerating(_Review, _Generating):
    settings = COMMON | {"system", "input_style", "max_new_tokens"}
    target: ClassVar[str]  # the field the generation is scored against

    def _shot_answer(self, ex: Example) -> str:
        return str(ex.meta[self.target])

    def _rows(self, texts: list[str], refs: list[str]) -> dict[str, m.MetricRows]:
        return {"bleu4": m.bleu4_rows(texts, refs)}

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        refs = [str(i.example.meta[self.target]) for i in items]
        texts = [r.text for r in responses]
        preds: list[dict[str, Any]] = [
            {"id": i.example.id, "reference": ref, "text": t} for i, ref, t in zip(items, refs, texts, strict=True)
        ]
        return TaskScores(self._rows(texts, refs), preds)


class ReviewCommentTask(_ReviewGenerating):
    task = "review_comment"
    needs = ("patch", "msg")
    target = "msg"
    primary = "bleu4"
    default_new_tokens = 64  # CodeReviewer's comments: 20 words on average


class CodeRefinementTask(_ReviewGenerating):
    task = "code_refinement"
    needs = ("old", "new", "comment")
    target = "new"
    primary = "bleu4"
    default_new_tokens = 256

    def _rows(self, texts: list[str], refs: list[str]) -> dict[str, m.MetricRows]:
        same = [float(code_lines(t) == code_lines(r)) for t, r in zip(texts, refs, strict=True)]
        return {"bleu4": m.bleu4_rows(texts, refs), "exact_match": m.mean_rows(same)}


__all__ = ["CodeRefinementTask", "ReviewCommentTask", "ReviewNecessityTask"]
