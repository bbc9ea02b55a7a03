"""The arms' numbers side by side: the best arm, the Pareto front of score against serving cost, and the
recommendation (the cheapest arm whose 95% interval overlaps the best arm's). Plain functions on plain rows,
so the rules are tested on hand-made numbers.

A row needs `arm`, `score`, `ci95_low`, `ci95_high` (None where there is no interval: eval.bootstrap=0) and
`s_per_1k` (the serving cost: CPU-seconds per 1,000 answers); `trainable_params` and `wall_s` break ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]


def _ok(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.get("status") == "ok" and r.get("score") is not None]


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def best_arm(rows: Sequence[Row], higher_is_better: bool = True) -> Row | None:
    """The arm with the best score; among equal scores the cheaper one."""
    ok = _ok(rows)
    if not ok:
        return None
    sign = -1 if higher_is_better else 1
    return min(ok, key=lambda r: (sign * r["score"], r["s_per_1k"]))


def pareto_front(rows: Sequence[Row], higher_is_better: bool = True) -> list[str]:
    """The arms no other arm beats on both score and cost (at least as good on both, better on one), cheapest
    first."""
    ok = _ok(rows)
    front = []
    for r in ok:
        dominated = any(
            o is not r
            and o["s_per_1k"] <= r["s_per_1k"]
            and not _better(r["score"], o["score"], higher_is_better)
            and (o["s_per_1k"] < r["s_per_1k"] or _better(o["score"], r["score"], higher_is_better))
            for o in ok
        )
        if not dominated:
            front.append(r)
    return [r["arm"] for r in sorted(front, key=lambda r: (r["s_per_1k"], r["arm"]))]


def _interval(r: Row) -> tuple[float, float]:
    low, high = r.get("ci95_low"), r.get("ci95_high")
    return (r["score"] if low is None else low, r["score"] if high is None else high)


def overlaps(a: Row, b: Row) -> bool:
    """Whether the two arms' 95% intervals share a point (an arm without an interval is its score)."""
    (alo, ahi), (blo, bhi) = _interval(a), _interval(b)
    return alo <= bhi and blo <= ahi


def recommend(rows: Sequence[Row], higher_is_better: bool = True) -> Row | None:
    """The cheapest arm (CPU-seconds per 1k answers; then fewer trainable parameters, then less wall time) whose
    interval overlaps the best arm's: as good as the best within what the held-out set can tell apart."""
    best = best_arm(rows, higher_is_better)
    if best is None:
        return None
    near = [r for r in _ok(rows) if overlaps(r, best)]
    return min(near, key=lambda r: (r["s_per_1k"], r.get("trainable_params") or 0, r.get("wall_s") or 0.0))


def recommendation_text(rows: Sequence[Row], higher_is_better: bool = True) -> str:
    best, pick = best_arm(rows, higher_is_better), recommend(rows, higher_is_better)
    if best is None or pick is None:
        return "No arm finished: nothing to recommend."

    def ci(r: Row) -> str:
        lo, hi = _interval(r)
        return f"{r['score']:.3f} [{lo:.3f}, {hi:.3f}]"

    cost = f"{pick['s_per_1k']:.4g} CPU-s per 1k answers"
    if pick["arm"] == best["arm"]:
        return f"**{best['arm']}**: the best arm ({ci(best)}, {cost}), and no cheaper arm's interval overlaps its own."
    return (
        f"**{pick['arm']}**: the cheapest arm ({cost}, against {best['s_per_1k']:.4g} for the best arm) whose "
        f"95% interval overlaps the best arm's: {pick['arm']} {ci(pick)}, best {best['arm']} {ci(best)}. "
        "On this held-out set the two cannot be told apart; the paired difference is in the table."
    )


__all__ = ["best_arm", "overlaps", "pareto_front", "recommend", "recommendation_text"]
