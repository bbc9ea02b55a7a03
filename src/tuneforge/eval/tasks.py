"""Task types: how items become model requests (`prepare`) and how responses become metrics (`score`).

TASK_TYPES is the one table of task types. A task asks the model two kinds of things, which the runner
batches across all items: the log-likelihood of continuations given a prompt, and greedy generations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from tuneforge.config import TaskSpec
from tuneforge.data.classification import default_instruction, label_index
from tuneforge.data.toolcalls import parse_calls
from tuneforge.eval import metrics as m
from tuneforge.eval.lm import LM, Scored
from tuneforge.eval.prompts import Item, chat, prompt_ids, tool_messages, user_text
from tuneforge.eval.readers import LETTERS, EvalError, Example
from tuneforge.eval.toolcall import calls_match, format_problem, names_match


@dataclass(frozen=True)
class Request:
    pairs: tuple[tuple[list[int], list[int]], ...] = ()  # (context, continuation) ids to score
    prompt: list[int] | None = None  # ids to generate from


@dataclass(frozen=True)
class Response:
    scores: tuple[Scored, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class TaskScores:
    metrics: dict[str, m.MetricRows]
    predictions: list[dict[str, Any]]  # one record per item, written beside the report


class Task(Protocol):
    spec: TaskSpec
    primary: str  # the metric shown in the summary and the chart
    max_new_tokens: int

    @property
    def headline(self) -> tuple[str, ...]: ...

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]: ...

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores: ...


COMMON: frozenset[str] = frozenset({"type", "format", "path", "name", "split", "limit", "subjects"})
CHAT: frozenset[str] = COMMON | {"fewshot", "fewshot_split", "instruction", "system", "perturb"}
EXAM_FORMATS = frozenset({"mmlu", "ceval", "cmmlu"})
SUBJECT_FORMATS = EXAM_FORMATS | {"crows_pairs", "bbq"}  # the only ones with subjects (bias types, categories)


class _Base:
    settings: ClassVar[frozenset[str]] = COMMON
    formats: ClassVar[frozenset[str]] = frozenset()
    default_new_tokens: ClassVar[int] = 0
    primary: str

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        self.spec = spec
        self.max_new_tokens = spec.max_new_tokens or self.default_new_tokens

    @property
    def headline(self) -> tuple[str, ...]:
        """The metrics a summary shows (the trust check's table): the primary one, unless a type names more."""
        return (self.primary,)


class PerplexityTask(_Base):
    """Token-level perplexity of held-out text (strided windows for long documents)."""

    settings = COMMON | {"max_length"}
    formats = frozenset({"text"})
    primary = "perplexity"

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        window = self.spec.max_length or 1024
        return [
            Request(tuple(lm.rolling_windows(list(lm.tokenizer(i.example.question)["input_ids"]), window)))
            for i in items
        ]

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        rows = [[-sum(s.logprob for s in r.scores), sum(s.tokens for s in r.scores)] for r in responses]
        arr = np.asarray(rows, dtype=float).reshape(-1, 2)
        per_token = lambda a: float(a[:, 0].sum() / a[:, 1].sum()) if a[:, 1].sum() else float("nan")  # noqa: E731
        metrics = {
            "perplexity": m.MetricRows(arr, lambda a: float(np.exp(per_token(a))), higher_is_better=False),
            "loss": m.MetricRows(arr, per_token, higher_is_better=False),
        }
        preds = [{"id": i.example.id, "nll": r[0], "tokens": r[1]} for i, r in zip(items, rows, strict=True)]
        return TaskScores(metrics, preds)


class MultipleChoiceTask(_Base):
    """Choose by log-likelihood: raw (`acc`) and divided by the answer's length in bytes (`acc_norm`)."""

    settings = CHAT | {"mc_style"}
    formats = frozenset({"mmlu", "ceval", "cmmlu", "llm_adapters", "hellaswag", "csqa"})

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        self.letters = spec.mc_style == "letter"
        self.primary = "acc" if self.letters else "acc_norm"
        bad = next((e for e in examples if e.gold is None or not e.choices), None)
        if bad is not None:
            raise EvalError(f"item {bad.id} of {spec.path} has no answer choices; is format {spec.format!r} right?")

    def _question(self, ex: Example) -> str:
        if not self.letters:
            return user_text(self.spec, ex, None)
        listed = "\n".join(f"{LETTERS[k]}. {c}" for k, c in enumerate(ex.choices))
        about = f" about {ex.subject.replace('_', ' ')}" if ex.subject else ""
        default = f"The following is a multiple choice question{about}. Answer with the letter of the right option."
        return user_text(self.spec, ex, default, f"{ex.question}\n{listed}\nAnswer:")

    def _answers(self, ex: Example) -> list[str]:
        return list(LETTERS[: len(ex.choices)]) if self.letters else list(ex.choices)

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        out = []
        for item in items:
            msgs = chat(self.spec, item, self._question, lambda e: self._answers(e)[e.gold or 0])
            ctx = prompt_ids(lm.tokenizer, msgs)
            out.append(Request(tuple((ctx, lm.encode(a)) for a in self._answers(item.example))))
        return out

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        raw, norm, preds = [], [], []
        for item, r in zip(items, responses, strict=True):
            ex, lps = item.example, [s.logprob for s in r.scores]
            lengths = [max(1, len(a.encode("utf-8"))) for a in self._answers(ex)]
            best = max(range(len(lps)), key=lambda k: lps[k])
            best_norm = max(range(len(lps)), key=lambda k: lps[k] / lengths[k])
            raw.append(float(best == ex.gold))
            norm.append(float(best_norm == ex.gold))
            preds.append({"id": ex.id, "gold": ex.gold, "pred": best, "pred_norm": best_norm, "logprobs": lps})
        return TaskScores({"acc": m.mean_rows(raw), "acc_norm": m.mean_rows(norm)}, preds)


class ClassificationTask(_Base):
    """Label by log-likelihood of each label word, or by generating and finding a label in the text.

    Accuracy, macro-F1, and for two labels the ROC AUC of P(positive label) (TALLRec's metric).
    """

    settings = CHAT | {"mode", "labels", "positive", "max_new_tokens"}
    formats = frozenset({"tsv", "alpaca", "llm_adapters"})
    primary = "accuracy"
    default_new_tokens = 16

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        self.labels = list(spec.labels) or self._labels_from(examples)
        self.gold = {e.id: self._gold(e) for e in examples}
        low = [label.lower() for label in self.labels]
        if spec.positive is not None and spec.positive.lower() not in low:
            raise EvalError(f"positive={spec.positive!r} is not one of the labels {self.labels}")
        named = next((p for p in ("yes", "true", "positive") if p in low), None)
        chosen = spec.positive.lower() if spec.positive else named
        self.positive = low.index(chosen) if chosen else len(self.labels) - 1

    def _labels_from(self, examples: Sequence[Example]) -> list[str]:
        if examples and examples[0].choices:
            return list(examples[0].choices)
        found = sorted({e.target.strip().rstrip(".!?") for e in examples})
        if all(t.isdigit() for t in found):
            raise EvalError(
                f"the labels in {self.spec.path} are numbers ({', '.join(found[:5])}); name them in order with "
                "`labels`, e.g. labels: [negative, positive]"
            )
        return found

    def _gold(self, ex: Example) -> int:
        k = label_index(ex.target, self.labels)  # as the `classification` training format reads labels
        if k is None:
            raise EvalError(f"item {ex.id}: label {ex.target!r} is not one of {self.labels}")
        return k

    def _question(self, ex: Example) -> str:
        # the instruction training's `classification` format uses too (data.classification), so prompts agree
        return user_text(self.spec, ex, default_instruction(self.labels))

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        out = []
        for item in items:
            msgs = chat(self.spec, item, self._question, lambda e: self.labels[self.gold.get(e.id, 0)])
            ids = prompt_ids(lm.tokenizer, msgs)
            gen = ids if self.spec.mode == "generate" else None
            out.append(Request(tuple((ids, lm.encode(label)) for label in self.labels), gen))
        return out

    def _find_label(self, text: str) -> int:
        low = text.lower()
        hits = [
            (mt.start(), k)
            for k, lab in enumerate(self.labels)
            if (mt := re.search(rf"\b{re.escape(lab.lower())}\b", low))
        ]
        return min(hits)[1] if hits else -1

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        pred, gold, p_pos, preds = [], [], [], []
        for item, r in zip(items, responses, strict=True):
            lps = np.asarray([s.logprob for s in r.scores])
            probs = np.exp(lps - lps.max())
            probs /= probs.sum()
            k = self._find_label(r.text) if self.spec.mode == "generate" else int(lps.argmax())
            g = self.gold[item.example.id]
            pred.append(k)
            gold.append(g)
            p_pos.append(float(probs[self.positive]))
            preds.append(
                {
                    "id": item.example.id,
                    "gold": self.labels[g],
                    "pred": self.labels[k] if k >= 0 else None,
                    "text": r.text,
                    "p_positive": p_pos[-1],
                }
            )
        metrics = {
            "accuracy": m.mean_rows([float(p == g) for p, g in zip(pred, gold, strict=True)]),
            "macro_f1": m.macro_f1_rows(pred, gold, len(self.labels)),
        }
        if len(self.labels) == 2:
            metrics["auc"] = m.auc_rows(p_pos, [int(g == self.positive) for g in gold])
        return TaskScores(metrics, preds)


class _Generating(_Base):
    def _question(self, ex: Example) -> str:
        return user_text(self.spec, ex, None)

    def _shot_answer(self, ex: Example) -> str:
        return ex.target

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        return [
            Request(prompt=prompt_ids(lm.tokenizer, chat(self.spec, i, self._question, self._shot_answer)))
            for i in items
        ]


class GenerationTask(_Generating):
    """Free generation against a reference: exact match, token F1, BLEU, ROUGE-1/2/L."""

    settings = CHAT | {"metrics", "language", "max_new_tokens"}
    formats = frozenset({"alpaca", "llm_adapters", "gsm8k"})
    default_new_tokens = 128

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        self.names: list[str] = list(spec.metrics) or list(m.GENERATION_METRICS)
        self.primary = self.names[0] if spec.metrics else "rougeL"

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        refs, texts = [i.example.target for i in items], [r.text for r in responses]
        rows = m.generation_rows(texts, refs, self.names, self.spec.language)
        preds = [
            {"id": i.example.id, "reference": ref, "text": t} for i, ref, t in zip(items, refs, texts, strict=True)
        ]
        return TaskScores(rows, preds)


class MathTask(_Generating):
    """Generate a worked answer, take the number it ends on, compare with the gold number."""

    settings = CHAT | {"max_new_tokens"}
    formats = frozenset({"llm_adapters", "gsm8k", "alpaca"})
    primary = "accuracy"
    default_new_tokens = 256

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        self.gold: dict[str, float] = {}
        for e in examples:
            value = m.parse_number(e.target)
            if value is None:
                raise EvalError(f"item {e.id} of {spec.path}: answer {e.target!r} is not a number")
            self.gold[e.id] = value

    def _question(self, ex: Example) -> str:
        return user_text(self.spec, ex, "Solve the problem. End your reply with: The answer is <number>.")

    def _shot_answer(self, ex: Example) -> str:
        return ex.reference or f"The answer is {ex.target}."

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        right, preds = [], []
        for item, r in zip(items, responses, strict=True):
            got, gold = m.extract_answer(r.text), self.gold[item.example.id]
            right.append(float(m.same_number(got, gold)))
            preds.append({"id": item.example.id, "gold": gold, "pred": got, "text": r.text})
        return TaskScores({"accuracy": m.mean_rows(right)}, preds)


class ToolCallTask(_Base):
    """Function calling, BFCL-style: the calls must match by name and arguments; irrelevance wants none.

    `format_valid`: the share of answers that are either plain text or well-formed calls to offered functions
    with arguments that fit their schemas (a broken `<tool_call>` block, an unknown function or a wrong-typed
    argument is invalid): whether the model speaks the call format at all, apart from picking the right call.
    """

    settings = COMMON | {"system", "max_new_tokens"}
    formats = frozenset({"bfcl"})
    primary = "accuracy"
    default_new_tokens = 128

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        # The tools go through the renderer, as in training: the template's own tool prompt where it has one,
        # else the hermes fallback (data.render); lm.tool_format is the evaluated run's (eval.run passes it).
        return [
            Request(
                prompt=prompt_ids(lm.tokenizer, tool_messages(self.spec, i.example), i.example.tools, lm.tool_format)
            )
            for i in items
        ]

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        right, names, valid, preds = [], [], [], []
        for item, r in zip(items, responses, strict=True):
            calls, expected = parse_calls(r.text)[1], list(item.example.calls or ())
            right.append(float(calls_match(calls, expected)))
            names.append(float(names_match(calls, expected)))
            problem = format_problem(r.text, calls, item.example.tools)
            valid.append(float(problem is None))
            got = [{"name": c.name, "arguments": c.arguments} for c in calls]
            pred = {"id": item.example.id, "correct": bool(right[-1]), "calls": got, "text": r.text}
            preds.append(pred | ({"format_problem": problem} if problem else {}))
        metrics = {"accuracy": m.mean_rows(right), "name_accuracy": m.mean_rows(names)}
        return TaskScores(metrics | {"format_valid": m.mean_rows(valid)}, preds)


# The commonsense, TALLRec, poetry, code-review and trust types build on the classes above (BBQ is multiple
# choice with bias scores), so they are imported here, after them; tuneforge.eval's __init__ imports this module first.
from tuneforge.eval.answer_task import AnswerPerplexityTask  # noqa: E402
from tuneforge.eval.code_review_task import CodeRefinementTask, ReviewCommentTask, ReviewNecessityTask  # noqa: E402
from tuneforge.eval.commonsense_tasks import HellaswagTask, PiqaTask, SiqaTask, WinograndeTask  # noqa: E402
from tuneforge.eval.poetry_task import PoetryTask  # noqa: E402
from tuneforge.eval.tallrec_task import TallrecTask  # noqa: E402
from tuneforge.eval.trust_tasks import BbqTask, CrowsPairsTask, RefusalTask  # noqa: E402

# type name -> task class; config.TaskType names the same keys.
TASK_TYPES: dict[str, type[_Base]] = {
    "perplexity": PerplexityTask,
    "answer_perplexity": AnswerPerplexityTask,
    "multiple_choice": MultipleChoiceTask,
    "classification": ClassificationTask,
    "generation": GenerationTask,
    "math": MathTask,
    "tool_call": ToolCallTask,
    "piqa": PiqaTask,
    "siqa": SiqaTask,
    "hellaswag": HellaswagTask,
    "winogrande": WinograndeTask,
    "tallrec": TallrecTask,
    "poetry": PoetryTask,
    "review_necessity": ReviewNecessityTask,
    "review_comment": ReviewCommentTask,
    "code_refinement": CodeRefinementTask,
    "crows_pairs": CrowsPairsTask,
    "bbq": BbqTask,
    "refusal": RefusalTask,
}


def check_spec(spec: TaskSpec, where: str) -> None:
    """Every setting given must apply to the task's type, and the format must be one it can read."""
    cls = TASK_TYPES[spec.type]
    allowed = cls.settings if spec.format in SUBJECT_FORMATS else cls.settings - {"subjects"}
    stray = sorted(spec.model_fields_set - allowed)
    if stray:
        raise EvalError(f"{where}: {', '.join(stray)} does not apply to a {spec.type} task with format {spec.format}")
    if spec.format not in cls.formats:
        raise EvalError(
            f"{where}.format={spec.format!r} cannot feed a {spec.type} task; allowed: {', '.join(sorted(cls.formats))}"
        )


def build_task(spec: TaskSpec, examples: Sequence[Example], where: str) -> Task:
    """The task for `spec`, checked against its settings and its data (labels, choices, numeric answers)."""
    check_spec(spec, where)
    try:
        return TASK_TYPES[spec.type](spec, examples)  # type: ignore[return-value]
    except EvalError as e:
        raise EvalError(f"{where}: {e}") from None


__all__ = ["TASK_TYPES", "Request", "Response", "Task", "TaskScores", "build_task", "check_spec"]
