"""PIQA, Social IQa, HellaSwag and WinoGrande as lm-evaluation-harness defines them, and LLM-Adapters' answers.

Each benchmark turns an item into one (context, continuation) text pair per choice; the model's log-likelihood
of each continuation picks the answer. The pairs are lm-evaluation-harness's task definitions
(lm_eval/tasks/piqa/piqa.yaml, siqa/siqa.yaml, hellaswag/hellaswag.yaml with utils.py, winogrande/default.yaml
with preprocess_winogrande.py): plain text, no chat template, the continuation after one space
(`target_delimiter`), `acc_norm` dividing by the choice's length in characters (`len(choice)` of the harness).

WinoGrande is scored partially: each option replaces the blank in the sentence up to the blank, that is the
context, and the continuation is the same text after the blank for both options.

The generative protocol is LLM-Adapters' (commonsense_evaluate.py): the model answers the published instruction
and the first "solution1"/"answer2"/"option1"/"ending3" in the reply, as written, is its choice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.eval.readers import Example


@dataclass(frozen=True)
class Choice:
    context: str
    continuation: str
    text: str  # what acc_norm divides by (the harness's doc_to_choice string)


def hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's HellaSwag clean-up: WikiHow's "[title]" becomes a sentence break, other
    bracketed tags ("[header]", "[step]") go, double spaces close."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _piqa(ex: Example) -> list[Choice]:
    return [Choice(f"Question: {ex.question}\nAnswer:", f" {c}", c) for c in ex.choices]


def _siqa(ex: Example) -> list[Choice]:
    # The harness writes "Q: {context} {question}\nA:"; LLM-Adapters' question is context and question joined by
    # a space already.
    return [Choice(f"Q: {ex.question}\nA:", f" {c}", c) for c in ex.choices]


def _hellaswag(ex: Example) -> list[Choice]:
    query = hellaswag_clean(ex.question)
    return [Choice(query, f" {hellaswag_clean(c)}", hellaswag_clean(c)) for c in ex.choices]


def _winogrande(ex: Example) -> list[Choice]:
    blank = ex.question.index("_")  # the reader made sure there is one, with text after it
    after = ex.question[blank + 1 :].strip()
    return [Choice(ex.question[:blank] + option, f" {after}", after) for option in ex.choices]


@dataclass(frozen=True)
class Benchmark:
    title: str
    label: str  # the word LLM-Adapters numbers the choices with (reader.CHOICE_LAYOUTS)
    choices: Callable[[Example], list[Choice]]
    primary: str  # the metric of the summary
    norm: bool  # acc_norm reported (the continuations differ between choices)
    formats: frozenset[str]
    answers: int  # LLM-Adapters' answer pattern: label1 .. label<answers>
    harness: str  # the lm-evaluation-harness definition matched


BENCHMARKS: dict[str, Benchmark] = {
    "piqa": Benchmark(
        title="PIQA", label="solution", choices=_piqa, primary="acc_norm", norm=True,
        formats=frozenset({"llm_adapters"}), answers=2, harness="lm_eval/tasks/piqa/piqa.yaml",
    ),
    "siqa": Benchmark(
        title="Social IQa", label="answer", choices=_siqa, primary="acc", norm=True,
        formats=frozenset({"llm_adapters"}), answers=5, harness="lm_eval/tasks/siqa/siqa.yaml",
    ),
    "hellaswag": Benchmark(
        title="HellaSwag", label="ending", choices=_hellaswag, primary="acc_norm", norm=True,
        formats=frozenset({"llm_adapters", "hellaswag"}), answers=4,
        harness="lm_eval/tasks/hellaswag/hellaswag.yaml (utils.preprocess)",
    ),
    "winogrande": Benchmark(
        title="WinoGrande", label="option", choices=_winogrande, primary="acc", norm=False,
        formats=frozenset({"llm_adapters"}), answers=2,
        harness="lm_eval/tasks/winogrande/default.yaml (partial scoring)",
    ),
}  # fmt: skip


def solved(benchmark: Benchmark, ex: Example) -> str:
    """A few-shot example: the gold choice's context and continuation (WinoGrande: the sentence filled in)."""
    gold = benchmark.choices(ex)[ex.gold or 0]
    return gold.context + gold.continuation


def pick(logprobs: list[float], texts: list[str]) -> tuple[int, int]:
    """(argmax of the log-likelihoods, argmax of the log-likelihoods per character): acc and acc_norm."""
    best = max(range(len(logprobs)), key=lambda k: logprobs[k])
    best_norm = max(range(len(logprobs)), key=lambda k: logprobs[k] / max(1, len(texts[k])))
    return best, best_norm


def generated_choice(benchmark: Benchmark, text: str) -> int:
    """The choice (0-based) a generated reply names, LLM-Adapters' way: the first label1..labelN in it, case as
    written ("Solution2" does not count); -1 when it names none. A number past the item's choices is wrong."""
    names = "|".join(f"{benchmark.label}{k}" for k in range(1, benchmark.answers + 1))
    found = re.search(names, text.strip())
    return int(found[0][len(benchmark.label) :]) - 1 if found else -1


__all__ = ["BENCHMARKS", "Benchmark", "Choice", "generated_choice", "hellaswag_clean", "pick", "solved"]
