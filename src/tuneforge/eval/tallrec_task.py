"""The `tallrec` task type: TALLRec's protocol (Bao et al. 2023) for yes/no recommendation.

The item's prompt goes through the chat template exactly as training renders it (tuneforge.data.tallrec), and
the model's next-token distribution at the answer position is read for the first token of "Yes." and of "No."
(the tokens training labels there, `data.render.answer_ids`); P(Yes) is the softmax over those two, as TALLRec's
evaluate.py does with the logits of "Yes" and "No". AUC ranks the items by P(Yes) — TALLRec's metric; nothing is
generated. Imported by tuneforge.eval.tasks after its base classes, into TASK_TYPES.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tuneforge.config import TaskSpec
from tuneforge.data.render import answer_ids
from tuneforge.data.schema import Message
from tuneforge.data.tallrec import LABELS, answer_text
from tuneforge.eval import metrics as m
from tuneforge.eval.lm import LM
from tuneforge.eval.prompts import Item, chat, prompt_ids, user_text
from tuneforge.eval.readers import EvalError, Example
from tuneforge.eval.tasks import COMMON, Request, Response, TaskScores, _Base

NO, YES = LABELS.index("No"), LABELS.index("Yes")


def p_yes(lp_no: float, lp_yes: float) -> float:
    """P(Yes) = softmax over the two label tokens' log-probabilities: the logistic of their difference, in the
    form that never overflows (math.exp of a difference above ~709 would: a model sure of one label)."""
    d = lp_yes - lp_no
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


def label_metrics(p: Sequence[float], gold: Sequence[int]) -> dict[str, m.MetricRows]:
    """`auc` of P(Yes) against gold (1 = Yes) and `accuracy` (P(Yes) > 0.5 said Yes): the task's scores, and the
    ones tuneforge.bench.tallrec_table recomputes from the predictions files."""
    right = [float((x > 0.5) == bool(g)) for x, g in zip(p, gold, strict=True)]
    return {"auc": m.auc_rows(list(p), list(gold)), "accuracy": m.mean_rows(right)}


class TallrecTask(_Base):
    """P(Yes) vs P(No) at the answer position: `auc` (primary), `accuracy` (P(Yes) > 0.5 said Yes), and
    `label_mass` (P(Yes) + P(No) among all tokens there: whether the model answers in the format at all)."""

    settings = COMMON | {"fewshot", "fewshot_split", "instruction", "system"}
    formats = frozenset({"tallrec"})
    primary = "auc"

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        found = {e.target for e in examples}
        if found != set(LABELS):
            only = ", ".join(sorted(found)) or "none"
            raise EvalError(f"{spec.path}: every item's label is {only}; AUC needs both Yes and No items")

    def _question(self, ex: Example) -> str:
        return user_text(self.spec, ex, None)  # `instruction`, if set, goes before the item's own prompt

    @staticmethod
    def _answer(ex: Example) -> str:
        return ex.reference or answer_text(ex.target)

    def _label_tokens(self, lm: LM, messages: list[Message], item: Item) -> tuple[int, int]:
        no, yes = (answer_ids(lm.tokenizer, messages, answer_text(label)) for label in LABELS)
        if not no or not yes or no[0] == yes[0]:
            raise EvalError(
                f"item {item.example.id} of {self.spec.path}: after this chat template's assistant header "
                f"{answer_text('Yes')!r} and {answer_text('No')!r} begin with the same token (or none), so "
                "P(Yes) vs P(No) cannot be read at the answer position"
            )
        return no[0], yes[0]

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        out = []
        for item in items:
            messages = chat(self.spec, item, self._question, self._answer)
            ctx = prompt_ids(lm.tokenizer, messages)
            no, yes = self._label_tokens(lm, messages, item)
            out.append(Request(((ctx, [no]), (ctx, [yes]))))  # one context pass: both from its last logits
        return out

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        probs, gold, mass = [], [], []
        preds: list[dict[str, Any]] = []
        for item, r in zip(items, responses, strict=True):
            lp_no, lp_yes = r.scores[NO].logprob, r.scores[YES].logprob
            p = p_yes(lp_no, lp_yes)
            g = int(item.example.gold == YES)
            probs.append(p)
            gold.append(g)
            mass.append(math.exp(lp_yes) + math.exp(lp_no))
            preds.append({"id": item.example.id, "gold": LABELS[g], "p_yes": p, "label_mass": mass[-1]})
        metrics = label_metrics(probs, gold)
        for pred, right in zip(preds, metrics["accuracy"].rows[:, 0], strict=True):
            pred["correct"] = bool(right)
        return TaskScores({**metrics, "label_mass": m.mean_rows(mass)}, preds)


__all__ = ["TallrecTask", "label_metrics", "p_yes"]
