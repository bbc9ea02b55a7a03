"""Retrieval metrics where the gold passages of each query are known.

Every function takes the retrieved chunk ids in rank order and the set of gold ids of ONE query; average
them over queries with `mean_metrics`.

  recall@k           share of the gold chunks found in the top k
  MRR                1 / rank of the first gold chunk (0 when none is retrieved); averaged, the mean reciprocal rank
  context precision  RAGAS's rank-aware precision: the mean of precision@i over the ranks i that hold a gold
                     chunk (1.0 when every gold chunk is ranked above every other chunk)
  context recall     share of the gold chunks in the whole retrieved context (recall@len(retrieved))
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def _check(gold: Collection[str]) -> None:
    if not gold:
        raise ValueError("a retrieval metric needs at least one gold chunk id for the query")


def recall_at_k(retrieved: Sequence[str], gold: Collection[str], k: int) -> float:
    _check(gold)
    return len(set(retrieved[:k]) & set(gold)) / len(set(gold))


def reciprocal_rank(retrieved: Sequence[str], gold: Collection[str]) -> float:
    _check(gold)
    return next((1.0 / r for r, c in enumerate(retrieved, start=1) if c in gold), 0.0)


def context_precision(retrieved: Sequence[str], gold: Collection[str]) -> float:
    _check(gold)
    hits, total = 0, 0.0
    for i, c in enumerate(retrieved, start=1):
        if c in gold:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def context_recall(retrieved: Sequence[str], gold: Collection[str]) -> float:
    return recall_at_k(retrieved, gold, len(retrieved))


def retrieval_metrics(
    runs: Sequence[tuple[Sequence[str], Collection[str]]], ks: Sequence[int] = (1, 3, 5)
) -> dict[str, float]:
    """Means over queries of recall@k for each k, MRR, context precision and context recall."""
    if not runs:
        raise ValueError("no queries to score")
    out = {f"recall@{k}": sum(recall_at_k(r, g, k) for r, g in runs) / len(runs) for k in ks}
    out["mrr"] = sum(reciprocal_rank(r, g) for r, g in runs) / len(runs)
    out["context_precision"] = sum(context_precision(r, g) for r, g in runs) / len(runs)
    out["context_recall"] = sum(context_recall(r, g) for r, g in runs) / len(runs)
    return out


__all__ = ["context_precision", "context_recall", "recall_at_k", "reciprocal_rank", "retrieval_metrics"]
