"""Mixing and splitting on sample keys: how many samples each dataset gives (mix_counts), the seeded pool of
(dataset, row) keys (mix) and the validation split that holds out every copy of a sample (split).

Keys rather than copies: a small, repeated dataset contributes copies of one record, and the validation split
takes all of them, so no validation sample is ever trained on. Every step is seeded from `data.seed`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tuneforge.config import DataConfig
from tuneforge.data.schema import DataError

Key = tuple[int, int]  # (dataset index, row index): one sample, however often mixing repeats it


def mix(rows: Sequence[Sequence[int]], ratios: Sequence[float | None], cfg: DataConfig) -> tuple[list[int], list[Key]]:
    """(counts, pool): each dataset's count (mix_counts) and the seeded, shuffled pool of sample keys, the
    selected `rows` of each dataset resampled to its count. Keys name the record, so copies stay one sample."""
    counts = mix_counts([len(r) for r in rows], ratios, cfg.mix_size)
    pool: list[Key] = []
    for i, (selected, count) in enumerate(zip(rows, counts, strict=True)):
        picks = resample(len(selected), count, random.Random(f"{cfg.seed}/mix/{i}"))
        pool += [(i, selected[j]) for j in picks]
    random.Random(cfg.seed).shuffle(pool)
    return counts, pool


def mix_counts(sizes: Sequence[int], ratios: Sequence[float | None], target: int | None) -> list[int]:
    """How many samples each dataset contributes.

    Without any ratio, datasets keep their sizes (scaled to `target` if given). With ratios, they are
    relative weights (a dataset without one weighs 1.0) of `target`, or of the total size. Rounding by
    largest remainder, so the counts add up to the target exactly.
    """
    total = target if target is not None else sum(sizes)
    if all(r is None for r in ratios):
        weights = [float(s) for s in sizes]
    else:
        weights = [1.0 if r is None else float(r) for r in ratios]
    quotas = [total * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def resample(n: int, count: int, rng: random.Random) -> list[int]:
    """`count` row indices out of `n`: whole copies of every row first, then a seeded random subset."""
    return list(range(n)) * (count // n) + sorted(rng.sample(range(n), count % n))


def split(pool: Sequence[Key], val_size: float) -> tuple[list[Key], list[Key]]:
    """(train, val): val takes distinct samples from the front of the shuffled pool; train drops all their
    copies. `val_size` is a fraction (<1, rounded up) or a count (>=1)."""
    if val_size <= 0:
        return list(pool), []
    distinct = len(set(pool))
    want = math.ceil(val_size * len(pool)) if val_size < 1 else int(val_size)
    if want >= distinct:
        raise DataError(
            f"data.val_size={val_size} asks for {want} validation samples, but there are only {distinct} "
            "distinct samples: nothing would be left to train on"
        )
    val: list[Key] = list(dict.fromkeys(pool))[:want]
    held = set(val)
    return [k for k in pool if k not in held], val


__all__ = ["Key", "mix", "mix_counts", "resample", "split"]
