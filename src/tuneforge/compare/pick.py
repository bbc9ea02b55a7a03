"""The arms' numbers side by side: the best arm, the Pareto front of score against serving cost, and the
recommendation. Plain functions on plain rows, so the rules are tested on hand-made numbers.

The recommendation is the cheapest arm that the held-out set cannot tell from the best arm:

- which arms (`RULES`): with bootstrap intervals, those whose paired difference to the best arm (`vs_best_low`,
  `vs_best_high`: the arm minus the best on the same resampled items) has a 95% interval containing 0; without
  (eval.bootstrap=0), those whose score interval overlaps the best arm's, where an arm's interval is its score;
- the cheapest (`cheapest`): fewest tokens per 1,000 answers (deterministic), then the fastest answer seconds
  (wall clock) per 1,000 answers, an arm within SECONDS_TIE of the fastest counted as a tie (measured seconds
  are noisy), then fewer trainable parameters, then the faster.

A row needs `arm`, `status`, `score`, `ci95_low`/`ci95_high` and `vs_best_low`/`vs_best_high` (None without
intervals), `tokens_per_1k`, `answer_s_per_1k`; `trainable_params` breaks ties. The Pareto front is drawn on the
plot's axes: score against answer seconds per 1,000 answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]
SECONDS_TIE = 0.10  # answer seconds within 10% of the fastest candidate's are a tie
RULES = {
    "paired": "whose paired difference to the best arm has a 95% interval containing 0",
    "overlap": "whose score interval overlaps the best arm's (eval.bootstrap=0: no intervals, so an equal score)",
}


def _ok(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("status") == "ok" and r.get("score") is not None]


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def cheapest(rows: Sequence[Row]) -> Row:
    """The cheapest row: fewest tokens per 1k answers; then answer seconds (a tie within SECONDS_TIE of the
    fastest), fewer trainable parameters, fewer seconds, the name."""
    fewest = min(r["tokens_per_1k"] for r in rows)
    by_tokens = [r for r in rows if r["tokens_per_1k"] == fewest]
    fastest = min(r["answer_s_per_1k"] for r in by_tokens)
    tied = [r for r in by_tokens if r["answer_s_per_1k"] <= fastest * (1 + SECONDS_TIE)]
    return min(tied, key=lambda r: (r.get("trainable_params") or 0, r["answer_s_per_1k"], r["arm"]))


def best_arm(rows: Sequence[Row], higher_is_better: bool = True) -> Row | None:
    """The arm with the best score; among equal scores the cheapest."""
    ok = _ok(rows)
    if not ok:
        return None
    top = (max if higher_is_better else min)(r["score"] for r in ok)
    return cheapest([r for r in ok if r["score"] == top])


def pareto_front(rows: Sequence[Row], higher_is_better: bool = True) -> list[str]:
    """The arms no other arm beats on both score and answer seconds (at least as good on both, better on one),
    fastest first."""
    ok = _ok(rows)
    front = []
    for r in ok:
        dominated = any(
            o is not r
            and o["answer_s_per_1k"] <= r["answer_s_per_1k"]
            and not _better(r["score"], o["score"], higher_is_better)
            and (o["answer_s_per_1k"] < r["answer_s_per_1k"] or _better(o["score"], r["score"], higher_is_better))
            for o in ok
        )
        if not dominated:
            front.append(r)
    return [r["arm"] for r in sorted(front, key=lambda r: (r["answer_s_per_1k"], r["arm"]))]


def _interval(r: Row) -> tuple[float, float]:
    low, high = r.get("ci95_low"), r.get("ci95_high")
    return (r["score"] if low is None else low, r["score"] if high is None else high)


def overlaps(a: Row, b: Row) -> bool:
    """Whether the two arms' 95% intervals share a point (an arm without an interval is its score)."""
    (alo, ahi), (blo, bhi) = _interval(a), _interval(b)
    return alo <= bhi and blo <= ahi


def paired_zero(r: Row) -> bool:
    """Whether the arm's paired difference to the best arm has a 95% interval containing 0."""
    return r["vs_best_low"] <= 0 <= r["vs_best_high"]


def rule_of(rows: Sequence[Row]) -> str:
    """`paired` when every finished arm has its paired interval, else `overlap` (eval.bootstrap=0)."""
    ok = _ok(rows)
    paired = all(r.get("vs_best_low") is not None and r.get("vs_best_high") is not None for r in ok)
    return "paired" if paired else "overlap"


def candidates(rows: Sequence[Row], higher_is_better: bool = True) -> list[Row]:
    """The arms the held-out set cannot tell from the best arm, by `rule_of(rows)` (the best arm among them)."""
    best = best_arm(rows, higher_is_better)
    if best is None:
        return []
    if rule_of(rows) == "paired":
        return [r for r in _ok(rows) if r is best or paired_zero(r)]
    return [r for r in _ok(rows) if overlaps(r, best)]


def recommend(rows: Sequence[Row], higher_is_better: bool = True) -> Row | None:
    """The cheapest arm (`cheapest`) of the `candidates`."""
    near = candidates(rows, higher_is_better)
    return cheapest(near) if near else None


def recommendation_text(rows: Sequence[Row], higher_is_better: bool = True) -> str:
    best, pick = best_arm(rows, higher_is_better), recommend(rows, higher_is_better)
    if best is None or pick is None:
        return "No arm finished: nothing to recommend."
    rule, near = rule_of(rows), candidates(rows, higher_is_better)

    def ci(r: Row) -> str:
        lo, hi = _interval(r)
        return f"{r['score']:.3f} [{lo:.3f}, {hi:.3f}]"

    def cost(r: Row) -> str:
        return f"{r['tokens_per_1k']:,} tokens, {r['answer_s_per_1k']:.4g} answer s (wall clock) per 1k answers"

    order = (
        "Cheapest: fewest tokens per 1k answers, then answer seconds (within "
        f"{SECONDS_TIE:.0%} of the fastest a tie), then fewer trainable parameters."
    )
    among = f"the cheapest of the {len(near)} arm{'s' if len(near) > 1 else ''} {RULES[rule]}"
    if pick["arm"] == best["arm"]:
        return f"**{best['arm']}**: the best arm ({ci(best)}; {cost(best)}), and {among}. {order}"
    diff = ""
    if rule == "paired":
        diff = f", difference {pick['vs_best']:+.3f} [{pick['vs_best_low']:+.3f}, {pick['vs_best_high']:+.3f}]"
    return (
        f"**{pick['arm']}**: {among} ({best['arm']}, {ci(best)}; {cost(best)}): {pick['arm']} {ci(pick)}{diff}; "
        f"{cost(pick)}. {order}"
    )


__all__ = [
    "RULES",
    "SECONDS_TIE",
    "best_arm",
    "candidates",
    "cheapest",
    "overlaps",
    "paired_zero",
    "pareto_front",
    "recommend",
    "recommendation_text",
    "rule_of",
]
