"""Canary exposure: how far a model prefers the secrets it was trained on over every other candidate.

The measure is The Secret Sharer's (Carlini, Liu, Erlingsson, Kos, Song, 2019, "The Secret Sharer: Evaluating
and Testing Unintended Memorization in Neural Networks", USENIX Security; https://arxiv.org/abs/1802.08232):

- log-perplexity Px(s) = -log2 P(s | model), over the canary's trained tokens (the answer of a chat canary);
- rank(s) = the position of s among all candidates of the randomness space R ordered by Px (1: most likely);
- exposure(s) = log2 |R| - log2 rank(s)  (Definition 4), between 0 and log2 |R|.

A secret the model has never seen has a uniformly random rank, so its exposure is about log2(e) ~ 1.44 bits on
average; a memorised one approaches log2 |R| (19.9 bits for 6 digits). When |R| is at most the candidate budget,
every candidate is scored and the rank is exact. Otherwise m candidates are sampled from R and the exposure is
estimated as the paper does (Section 4.3, "approximation by distribution modeling"): a skew-normal fitted to the
sampled candidates' log-perplexities, exposure = -log2 CDF(Px(s)) (it can resolve far beyond 1/m). The plain
sampling estimate, -log2 of the fraction of sampled candidates at least as likely (with s itself), is reported
beside it; it cannot exceed log2(m + 1).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tuneforge.audit import AuditError
from tuneforge.audit.scoring import continuation_logprobs
from tuneforge.config import DataConfig
from tuneforge.data.canaries import Canary, CanaryRecord
from tuneforge.data.render import IGNORE_INDEX, Rendered, render_conversation, render_text
from tuneforge.data.schema import Conversation, Text
from tuneforge.eval.lm import LM

# secrets -> their log-perplexities in bits (the model's scorer, or a test's table)
Scorer = Callable[[Sequence[str]], np.ndarray]


def exposure(rank: float, space: int) -> float:
    """Carlini et al. 2019, Definition 4: log2 |R| - log2 rank."""
    if not 1 <= rank <= space:
        raise ValueError(f"a rank lies in 1..{space}, got {rank}")
    return math.log2(space) - math.log2(rank)


def rank_among(px: float, others: np.ndarray) -> float:
    """1 + the number of other candidates with a lower log-perplexity (more likely); ties count half."""
    others = np.asarray(others, dtype=float)
    return float(1 + np.sum(others < px) + 0.5 * np.sum(others == px))


def sampled_exposure(px: float, sample: np.ndarray, space: int) -> float:
    """-log2 of the estimated Pr_{r in R}[Px(r) <= Px(s)]: s's rank among m sampled others, over m + 1.

    With every other candidate as the sample (m = |R| - 1) this is exactly log2 |R| - log2 rank."""
    p = rank_among(px, sample) / (len(sample) + 1)
    return min(-math.log2(p), math.log2(space))


def extrapolated_exposure(px: float, sample: np.ndarray, space: int) -> float:
    """Section 4.3 of the paper: -log2 CDF(Px(s)) under a skew-normal fitted to the sampled candidates' Px,
    kept within [0, log2 |R|] (a rank lies in 1..|R|)."""
    try:
        from scipy import stats
    except ImportError:  # scipy comes with opacus, the privacy extra
        raise AuditError(
            "estimating canary exposure over a sampled candidate space fits a skew-normal with scipy: "
            "pip install 'tuneforge[privacy]' (or score every candidate: --candidates >= 10^digits)"
        ) from None
    sample = np.asarray(sample, dtype=float)
    if len(sample) < 10 or float(np.std(sample)) == 0.0:
        raise AuditError(f"the skew-normal fit needs at least 10 candidates that differ; got {len(sample)}")
    shape, loc, scale = stats.skewnorm.fit(sample)
    bits = -float(stats.skewnorm.logcdf(px, shape, loc, scale)) / math.log(2)
    return min(max(bits, 0.0), math.log2(space))


def model_scorer(lm: LM, record: CanaryRecord, data: DataConfig) -> Scorer:
    """Log-perplexities (bits) of secrets under `lm`: each candidate rendered as the canary was trained (the
    run's chat template and data settings), scored over its trained tokens given what precedes them."""

    def render(secret: str) -> Rendered | None:
        sample = record.sample(secret)
        if isinstance(sample, Text):
            return render_text(lm.tokenizer, sample, data.cutoff_len)
        assert isinstance(sample, Conversation)
        return render_conversation(lm.tokenizer, sample, data.cutoff_len, False, data.tool_format, data.max_tools)

    def score(secrets: Sequence[str]) -> np.ndarray:
        pairs = []
        for secret in secrets:
            rendered = render(secret)
            if rendered is None:
                raise AuditError(f"the canary {record.text(secret)!r} does not fit data.cutoff_len={data.cutoff_len}")
            pairs.append(_context_and_answer(rendered))
        return -continuation_logprobs(lm, pairs, "scoring canary candidates") / math.log(2)

    return score


def _context_and_answer(rendered: Rendered) -> tuple[list[int], list[int]]:
    """(what precedes the trained tokens, the trained tokens): one span, the canary's answer (or its text after
    the first token, which nothing predicts)."""
    labelled = [i for i, label in enumerate(rendered.labels) if label != IGNORE_INDEX]
    first = max(labelled[0], 1)
    return rendered.input_ids[:first], rendered.input_ids[first : labelled[-1] + 1]


def candidate_sample(record: CanaryRecord, m: int, seed: int) -> list[str]:
    """m distinct secrets drawn uniformly from R, none of the record's own (inserted or reference)."""
    own = {c.secret for c in record.canaries}
    m = min(m, record.space - len(own))
    values = random.Random(f"{seed}/candidates").sample(range(record.space), min(record.space, m + len(own)))
    return [s for s in map(record.secret, values) if s not in own][:m]


def exposures(record: CanaryRecord, score: Scorer, candidates: int, seed: int) -> dict[str, Any]:
    """The exposure of every canary of `record`: exact when |R| <= `candidates`, else estimated from
    `candidates` sampled secrets. `score` gives secrets' log-perplexities in bits."""
    if candidates < 10:
        raise AuditError(f"--candidates {candidates}: rank the canaries among at least 10 candidate secrets")
    if not record.canaries:
        raise AuditError("the canary record holds no canaries")
    exact = record.space <= candidates
    if exact:
        every = [record.secret(v) for v in range(record.space)]
        px_all = score(every)
        index = {s: i for i, s in enumerate(every)}
        px = {c.secret: float(px_all[index[c.secret]]) for c in record.canaries}
        rows = [_exact_row(c, px[c.secret], np.delete(px_all, index[c.secret]), record.space) for c in record.canaries]
        scored = record.space
    else:
        sample = candidate_sample(record, candidates, seed)
        px_sample = score(sample)
        px_own = score([c.secret for c in record.canaries])
        rows = [
            _sampled_row(c, float(p), px_sample, record.space) for c, p in zip(record.canaries, px_own, strict=True)
        ]
        scored = len(sample)
    return {
        "space": record.space,
        "digits": record.digits,
        "max_exposure": round(math.log2(record.space), 4),
        "mode": "exact" if exact else "sampled",
        "candidates_scored": scored,
        "estimate": "exact rank" if exact else "skew-normal extrapolation (Carlini et al. 2019, Section 4.3)",
        "format": record.format,
        **({"prompt": record.prompt} if record.kind == "chat" else {}),
        "by_repeats": summarise(rows),
        "canaries": rows,
    }


def _exact_row(c: Canary, px: float, others: np.ndarray, space: int) -> dict[str, Any]:
    rank = rank_among(px, others)
    return {
        "secret": c.secret,
        "repeats": c.repeats,
        "log_perplexity": round(px, 4),
        "rank": rank,
        "exposure": round(exposure(rank, space), 4),
    }


def _sampled_row(c: Canary, px: float, sample: np.ndarray, space: int) -> dict[str, Any]:
    bits = extrapolated_exposure(px, sample, space)
    return {
        "secret": c.secret,
        "repeats": c.repeats,
        "log_perplexity": round(px, 4),
        "rank_estimate": round(2 ** (math.log2(space) - bits), 2),
        "exposure": round(bits, 4),
        "exposure_sampled": round(sampled_exposure(px, sample, space), 4),
    }


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exposure per number of insertions (0: the never-inserted references), most repeated last."""
    out = []
    for repeats in sorted({r["repeats"] for r in rows}):
        values = np.array([r["exposure"] for r in rows if r["repeats"] == repeats])
        out.append(
            {
                "repeats": repeats,
                "inserted": repeats > 0,
                "n": len(values),
                "exposure_mean": round(float(values.mean()), 4),
                "exposure_median": round(float(np.median(values)), 4),
                "exposure_min": round(float(values.min()), 4),
                "exposure_max": round(float(values.max()), 4),
            }
        )
    return out


__all__ = [
    "Scorer",
    "candidate_sample",
    "exposure",
    "exposures",
    "extrapolated_exposure",
    "model_scorer",
    "rank_among",
    "sampled_exposure",
    "summarise",
]
