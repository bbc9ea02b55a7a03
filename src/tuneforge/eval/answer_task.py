"""The `answer_perplexity` task type: how likely the model finds held-out reference answers to their prompts.

Each item's question goes through the chat template as training renders a user turn, and the reference answer
is scored as the assistant turn training would label (`data.render.answer_ids`, up to and including the
template's end-of-turn token). Nothing is generated, so the score does not depend on the model's own wording:
a general chat set scored this way shows whether fine-tuning moved the model away from ordinary answers (the
forgetting report's chat task), where judging generated answers by the base model's likelihood would be circular.
Imported by tuneforge.eval.tasks after its base classes, into TASK_TYPES.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tuneforge.config import TaskSpec
from tuneforge.data.render import trained_answer_ids
from tuneforge.eval import metrics as m
from tuneforge.eval.lm import LM
from tuneforge.eval.prompts import Item, chat, prompt_ids, user_text
from tuneforge.eval.readers import EvalError, Example
from tuneforge.eval.tasks import COMMON, Request, Response, TaskScores, _Base


def _pooled_loss(rows: np.ndarray) -> float:
    """Negative log-likelihood per answer token over all items (a corpus figure, recomputed per resample)."""
    tokens = rows[:, 1].sum()
    return float(rows[:, 0].sum() / tokens) if tokens else float("nan")


def _pooled_perplexity(rows: np.ndarray) -> float:
    return float(np.exp(_pooled_loss(rows)))


class AnswerPerplexityTask(_Base):
    """Reference answers' log-likelihood after their chat prompts: `perplexity` (primary) and `loss` (nats per
    answer token), both pooled over the answers' tokens and lower is better; per item, the answer's `nll`."""

    settings = COMMON | {"fewshot", "fewshot_split", "instruction", "system"}
    formats = frozenset({"alpaca", "llm_adapters", "gsm8k"})
    primary = "perplexity"

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        bad = next((e for e in examples if not (e.reference or "").strip()), None)
        if bad is not None:
            raise EvalError(
                f"item {bad.id} of {spec.path} has no reference answer (alpaca `output`, a GSM8K worked answer, an "
                "LLM-Adapters `output`) to score; answer_perplexity needs free-text answers"
            )

    def _question(self, ex: Example) -> str:
        return user_text(self.spec, ex, None)

    @staticmethod
    def _answer(ex: Example) -> str:
        return (ex.reference or "").strip()

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        out = []
        for item in items:
            messages = chat(self.spec, item, self._question, self._answer)
            answer = trained_answer_ids(lm.tokenizer, messages, self._answer(item.example))
            out.append(Request(((prompt_ids(lm.tokenizer, messages, tool_format=lm.tool_format), answer),)))
        return out

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        rows = [[-r.scores[0].logprob, r.scores[0].tokens] for r in responses]
        arr = np.asarray(rows, dtype=float).reshape(-1, 2)
        metrics = {
            "perplexity": m.MetricRows(arr, _pooled_perplexity, higher_is_better=False),
            "loss": m.MetricRows(arr, _pooled_loss, higher_is_better=False),
        }
        preds = [
            {"id": i.example.id, "nll": nll, "tokens": int(n), "answer": self._answer(i.example)}
            for i, (nll, n) in zip(items, rows, strict=True)
        ]
        return TaskScores(metrics, preds)


__all__ = ["AnswerPerplexityTask"]
