"""Metrics, each in two steps: per-item rows, then a reduction of any subset of rows to one number.

Keeping the per-item rows (rather than only the final score) is what makes the paired bootstrap cheap and
exact for corpus-level metrics too: BLEU sums n-gram statistics, macro-F1 counts a confusion table, AUC ranks
scores, so a resample is just an index array over the rows (see `tuneforge.eval.stats`).

BLEU is sacrebleu's and ROUGE is rouge-score's; the text normalisation of exact match and token F1 is the
SQuAD one. Chinese text is segmented with jieba for F1 and ROUGE (rouge-score's own tokenizer drops every
non-ASCII character) and with sacrebleu's `zh` tokenizer for BLEU.
"""

from __future__ import annotations

import logging
import math
import re
import string
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

Reduce = Callable[[np.ndarray], float]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
GENERATION_METRICS = ("exact_match", "f1", "bleu", *ROUGE_TYPES)


@dataclass(frozen=True)
class MetricRows:
    """Per-item rows of one metric (shape: items x k) and how a subset of rows becomes the score."""

    rows: np.ndarray
    reduce: Reduce
    higher_is_better: bool = True
    ideal: float | None = None  # a bias score's best value (CrowS-Pairs 0.5, BBQ 0), which neither side passes

    def value(self) -> float:
        return float(self.reduce(self.rows)) if len(self.rows) else float("nan")


def mean_rows(values: Sequence[float]) -> MetricRows:
    return MetricRows(np.asarray(values, dtype=float).reshape(-1, 1), item_mean)


def item_mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean())


# --- text normalisation ------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ZH_PUNCT = "，。！？；：、“”‘’（）《》【】…—·「」『』"


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str, language: str = "en") -> list[str]:
    if language == "zh":
        import jieba  # lazy: loading its dictionary takes a second

        jieba.setLogLevel(logging.WARNING)  # it announces every dictionary load on stderr
        drop = set(string.punctuation + _ZH_PUNCT)
        return [t for t in (w.strip() for w in jieba.lcut(text.lower())) if t and t not in drop]
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str, language: str = "en") -> float:
    return float(tokens(prediction, language) == tokens(reference, language))


def token_f1(prediction: str, reference: str, language: str = "en") -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the shared tokens (with multiplicity)."""
    pred, ref = tokens(prediction, language), tokens(reference, language)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


# --- BLEU (corpus level, from summed sentence statistics) --------------------------------------------


def bleu_rows(predictions: Sequence[str], references: Sequence[str], language: str = "en") -> MetricRows:
    """Rows [sys_len, ref_len, correct_1..4, total_1..4]; their sum gives sacrebleu's corpus BLEU."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="zh" if language == "zh" else "13a")
    rows = []
    for pred, ref in zip(predictions, references, strict=True):
        s = bleu.corpus_score([pred], [[ref]])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return MetricRows(np.asarray(rows, dtype=float).reshape(-1, 10), _bleu_reduce)


def _bleu_reduce(rows: np.ndarray) -> float:
    from sacrebleu.metrics import BLEU

    s = rows.sum(axis=0)
    correct, total = [int(x) for x in s[2:6]], [int(x) for x in s[6:10]]
    # sacrebleu's corpus default is exponential smoothing of zero n-gram counts.
    return float(BLEU.compute_bleu(correct, total, int(s[0]), int(s[1]), smooth_method="exp").score)


# --- CodeReviewer's BLEU-4 (smoothed, per sentence, averaged) ------------------------------------------
# Written here because neither sacrebleu nor nltk computes it: CodeReviewer (Li et al. 2022) and the code-review
# papers after it, LLaMA-Reviewer among them, score with CodeXGLUE's smooth_bleu.py: each prediction against its
# reference on lower-cased word/punctuation tokens, n-gram precisions 1-4 with add-one smoothing for n >= 2
# (Lin & Och 2004), a brevity penalty with +1 in both lengths, the geometric mean; the corpus score is the mean
# of these sentence scores x 100. CodeReviewer's comment score also drops a stop-word list first (its
# run_test_msg.py logs both); this one keeps every word (its "WithStop BLEU"), see docs/recipes/code_review.md.

_REVIEW_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")
_TINY = sys.float_info.min  # smooth_bleu.py adds it inside each log so that log(0) is finite


def review_tokens(text: str) -> list[str]:
    """The tokens smooth_bleu.py ends up comparing, lower-cased: runs of letters and digits, and each other
    character but spaces alone (its wordpunct and punctuation splits, then the NIST rules, which split `_` too)."""
    return _REVIEW_TOKEN.findall(text.lower())


def smooth_bleu4(prediction: str, reference: str) -> float:
    """One sentence's smoothed BLEU-4 in [0, 1], as smooth_bleu.py's bleu([reference], prediction)[0]."""
    pred, ref = review_tokens(prediction), review_tokens(reference)
    ref_counts = Counter(tuple(ref[i : i + k]) for k in range(1, 5) for i in range(len(ref) - k + 1))
    log_bleu = 0.0
    for k in range(1, 5):
        grams = Counter(tuple(pred[i : i + k]) for i in range(len(pred) - k + 1))
        correct = sum(min(c, ref_counts[g]) for g, c in grams.items())
        guess = max(len(pred) - k + 1, 0)
        add = 1 if k > 1 else 0
        log_bleu += math.log(correct + add + _TINY) - math.log(guess + add + _TINY)
    brevity = min(0.0, 1 - (len(ref) + 1) / (len(pred) + 1))
    return math.exp(log_bleu / 4 + brevity)


def bleu4_rows(predictions: Sequence[str], references: Sequence[str]) -> MetricRows:
    """Per-item smoothed BLEU-4 x 100; the score is their mean (CodeReviewer's BLEU-4)."""
    return mean_rows([100 * smooth_bleu4(p, r) for p, r in zip(predictions, references, strict=True)])


# --- ROUGE -------------------------------------------------------------------------------------------


class _ListTokenizer:
    """rouge-score accepts any object with tokenize(); this one serves the jieba path."""

    def __init__(self, language: str) -> None:
        self.language = language

    def tokenize(self, text: str) -> list[str]:
        return tokens(text, self.language)


def rouge_rows(predictions: Sequence[str], references: Sequence[str], language: str = "en") -> dict[str, MetricRows]:
    """ROUGE-1/2/L F-measures per item, averaged over items."""
    from rouge_score import rouge_scorer

    tokenizer = _ListTokenizer(language) if language == "zh" else None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)
    per: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for t in ROUGE_TYPES:
            per[t].append(scores[t].fmeasure)
    return {t: mean_rows(v) for t, v in per.items()}


def generation_rows(
    predictions: Sequence[str], references: Sequence[str], names: Sequence[str], language: str = "en"
) -> dict[str, MetricRows]:
    out: dict[str, MetricRows] = {}
    if "exact_match" in names:
        out["exact_match"] = mean_rows(
            [exact_match(p, r, language) for p, r in zip(predictions, references, strict=True)]
        )
    if "f1" in names:
        out["f1"] = mean_rows([token_f1(p, r, language) for p, r in zip(predictions, references, strict=True)])
    if "bleu" in names:
        out["bleu"] = bleu_rows(predictions, references, language)
    if any(t in names for t in ROUGE_TYPES):
        rouge = rouge_rows(predictions, references, language)
        out.update({t: rouge[t] for t in ROUGE_TYPES if t in names})
    return out


# --- classification ----------------------------------------------------------------------------------


def macro_f1_rows(predicted: Sequence[int], gold: Sequence[int], n_classes: int) -> MetricRows:
    """Rows [predicted, gold] (class indices; -1 = no valid prediction, wrong for every class)."""
    rows = np.stack([np.asarray(predicted, dtype=float), np.asarray(gold, dtype=float)], axis=1)
    return MetricRows(rows.reshape(-1, 2), lambda r: macro_f1(r[:, 0], r[:, 1], n_classes))


def macro_f1(predicted: Any, gold: Any, n_classes: int) -> float:
    """Mean over the classes present in gold or predictions of per-class F1 (sklearn's 'macro' average)."""
    pred, true = np.asarray(predicted, dtype=int), np.asarray(gold, dtype=int)
    scores = []
    for c in range(n_classes):
        tp = int(np.sum((pred == c) & (true == c)))
        fp = int(np.sum((pred == c) & (true != c)))
        fn = int(np.sum((pred != c) & (true == c)))
        if tp + fp + fn == 0:
            continue  # a class absent from both sides has no defined F1 and does not count
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def binary_rows(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, MetricRows]:
    """`f1`, `precision` and `recall` of the positive class over rows [predicted, gold] (0/1); each is 0 where
    its denominator is (no positive predicted, or none in gold), as scikit-learn's zero_division=0."""
    rows = np.stack([np.asarray(predicted, dtype=float), np.asarray(gold, dtype=float)], axis=1).reshape(-1, 2)

    def counts(r: np.ndarray) -> tuple[float, float, float]:
        p, g = r[:, 0] > 0.5, r[:, 1] > 0.5
        return float(np.sum(p & g)), float(np.sum(p & ~g)), float(np.sum(~p & g))

    def ratio(num: float, den: float) -> float:
        return num / den if den else 0.0

    def f1(r: np.ndarray) -> float:
        tp, fp, fn = counts(r)
        return ratio(2 * tp, 2 * tp + fp + fn)

    def precision(r: np.ndarray) -> float:
        tp, fp, _ = counts(r)
        return ratio(tp, tp + fp)

    def recall(r: np.ndarray) -> float:
        tp, _, fn = counts(r)
        return ratio(tp, tp + fn)

    return {"f1": MetricRows(rows, f1), "precision": MetricRows(rows, precision), "recall": MetricRows(rows, recall)}


def auc_rows(scores: Sequence[float], positive: Sequence[int]) -> MetricRows:
    rows = np.stack([np.asarray(scores, dtype=float), np.asarray(positive, dtype=float)], axis=1)
    return MetricRows(rows.reshape(-1, 2), lambda r: roc_auc(r[:, 0], r[:, 1]))


def roc_auc(scores: Any, positive: Any) -> float:
    """ROC AUC as the Mann–Whitney statistic: P(score of a positive > score of a negative), ties count half.

    Written here rather than taken from scikit-learn, which would be a large dependency for ten lines.
    NaN when one class is missing (the AUC is undefined).
    """
    s, y = np.asarray(scores, dtype=float), np.asarray(positive).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # average ranks, ties sharing theirs, in one pass (the bootstrap recomputes this on every resample)
    _, group, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[group]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- math answers ------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|-?\.\d+")


def parse_number(text: str) -> float | None:
    """'1,234' -> 1234.0, '3/4' -> 0.75, '-2.50' -> -2.5; None when it is no number."""
    text = text.strip().replace(",", "").rstrip(".")
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = Decimal(num) / Decimal(den)
        else:
            value = Decimal(text)
    except (InvalidOperation, ZeroDivisionError, ValueError):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def extract_answer(text: str) -> float | None:
    """The number a model's answer ends on.

    Looked for in order: after the last '####' (GSM8K), after the last 'answer is' (the LLM-Adapters and
    chain-of-thought convention), else the last number in the text (the LLM-Adapters fallback).
    """
    for marker in ("####", "answer is"):
        at = text.lower().rfind(marker)
        if at >= 0:
            found = _NUMBER.search(text[at + len(marker) :].replace("$", ""))
            if found:
                return parse_number(found.group())
    found_all = _NUMBER.findall(text.replace("$", ""))
    return parse_number(found_all[-1]) if found_all else None


def same_number(predicted: float | None, gold: float, tolerance: float = 1e-4) -> bool:
    return predicted is not None and abs(predicted - gold) <= tolerance * max(1.0, abs(gold))


__all__ = [
    "GENERATION_METRICS",
    "ROUGE_TYPES",
    "MetricRows",
    "auc_rows",
    "binary_rows",
    "bleu4_rows",
    "bleu_rows",
    "exact_match",
    "extract_answer",
    "generation_rows",
    "item_mean",
    "macro_f1",
    "macro_f1_rows",
    "mean_rows",
    "normalize_answer",
    "parse_number",
    "review_tokens",
    "roc_auc",
    "rouge_rows",
    "same_number",
    "smooth_bleu4",
    "token_f1",
    "tokens",
]
