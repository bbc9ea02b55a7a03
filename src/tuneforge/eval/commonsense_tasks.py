"""The commonsense task types (piqa, siqa, hellaswag, winogrande): one class scoring them the way
lm-evaluation-harness does, or LLM-Adapters' generate protocol; the benchmarks' layouts are in
tuneforge.eval.commonsense. Imported by tuneforge.eval.tasks after its base classes, into TASK_TYPES."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from tuneforge.config import TaskSpec
from tuneforge.eval import commonsense as cs
from tuneforge.eval import metrics as m
from tuneforge.eval.lm import LM
from tuneforge.eval.prompts import Item, chat, plain_prompt, prompt_ids
from tuneforge.eval.readers import EvalError, Example
from tuneforge.eval.tasks import COMMON, Request, Response, TaskScores, _Base


class CommonsenseTask(_Base):
    """A commonsense benchmark scored as lm-evaluation-harness does (tuneforge.eval.commonsense): plain-text
    prompts, each choice's continuation log-likelihood, `acc` and `acc_norm` (WinoGrande: partial scoring, `acc`);
    or with `mode: generate` LLM-Adapters' protocol: the published instruction through the chat template, the
    first "solution1"-style name in the reply, `acc` and `answered` (the share of replies naming any choice)."""

    settings = COMMON | {"fewshot", "fewshot_split", "instruction", "system", "mode", "max_new_tokens"}
    benchmark: ClassVar[cs.Benchmark]
    default_new_tokens = 32  # LLM-Adapters' commonsense evaluation generates 32 tokens

    def __init__(self, spec: TaskSpec, examples: Sequence[Example]) -> None:
        super().__init__(spec, examples)
        b, self.generate = self.benchmark, spec.mode == "generate"
        self.primary = "acc" if self.generate else b.primary
        chat_only = sorted({"system", "max_new_tokens"} & spec.model_fields_set)
        if chat_only and not self.generate:
            raise EvalError(f"{', '.join(chat_only)} applies to mode=generate only (log-likelihood prompts are plain)")
        bad = next((e for e in examples if e.choice_label != b.label or e.gold is None), None)
        if bad is not None:
            raise EvalError(
                f"item {bad.id} of {spec.path} is not in {b.title}'s layout (choices named "
                f"{b.label.capitalize()}1, {b.label.capitalize()}2, ...); is type {spec.type!r} the right benchmark?"
            )

    def _shot_answer(self, ex: Example) -> str:
        return ex.reference or f"the correct answer is {self.benchmark.label}{(ex.gold or 0) + 1}"

    def _question(self, ex: Example) -> str:
        return "\n\n".join(p for p in (self.spec.instruction, ex.prompt or ex.question) if p)

    def prepare(self, items: Sequence[Item], lm: LM) -> list[Request]:
        if self.generate:
            return [
                Request(prompt=prompt_ids(lm.tokenizer, chat(self.spec, i, self._question, self._shot_answer)))
                for i in items
            ]
        out = []
        for item in items:
            shots = [cs.solved(self.benchmark, s) for s in item.shots]
            pairs = [
                lm.encode_pair(plain_prompt(self.spec.instruction, shots, c.context), c.continuation)
                for c in self.benchmark.choices(item.example)
            ]
            out.append(Request(tuple(pairs)))
        return out

    def score(self, items: Sequence[Item], responses: Sequence[Response]) -> TaskScores:
        acc, norm, answered = [], [], []
        preds: list[dict[str, Any]] = []
        for item, r in zip(items, responses, strict=True):
            ex = item.example
            if self.generate:
                k = cs.generated_choice(self.benchmark, r.text)
                acc.append(float(k == ex.gold))
                answered.append(float(k >= 0))
                preds.append({"id": ex.id, "gold": ex.gold, "pred": k if k >= 0 else None, "text": r.text})
                continue
            lps = [s.logprob for s in r.scores]
            best, best_norm = cs.pick(lps, [c.text for c in self.benchmark.choices(ex)])
            acc.append(float(best == ex.gold))
            norm.append(float(best_norm == ex.gold))
            pred = {"id": ex.id, "gold": ex.gold, "pred": best, "logprobs": lps}
            preds.append(pred | ({"pred_norm": best_norm} if self.benchmark.norm else {}))
        metrics = {"acc": m.mean_rows(acc)}
        if self.generate:
            metrics["answered"] = m.mean_rows(answered)
        elif self.benchmark.norm:
            metrics["acc_norm"] = m.mean_rows(norm)
        return TaskScores(metrics, preds)


class PiqaTask(CommonsenseTask):
    benchmark = cs.BENCHMARKS["piqa"]
    formats = benchmark.formats


class SiqaTask(CommonsenseTask):
    benchmark = cs.BENCHMARKS["siqa"]
    formats = benchmark.formats


class HellaswagTask(CommonsenseTask):
    benchmark = cs.BENCHMARKS["hellaswag"]
    formats = benchmark.formats


class WinograndeTask(CommonsenseTask):
    benchmark = cs.BENCHMARKS["winogrande"]
    formats = benchmark.formats
