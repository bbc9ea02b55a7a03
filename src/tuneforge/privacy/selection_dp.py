"""The one private step of data selection (privacy/selection.py): the Gaussian mechanism on the private
cluster histogram, calibrated and accounted by opacus, and the integer allocation of the draw it steers."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np

from tuneforge.data.schema import DataError
from tuneforge.privacy.dp import accountant_kwargs, quiet_accounting, rdp_alphas

PRIVACY_EXTRA = "pip install 'tuneforge[privacy]'"


class SelectionError(DataError):
    """A selection that cannot run; the message names the setting, value or dataset at fault."""


def calibrate(epsilon: float, delta: float, accountant: str) -> tuple[float, float, float]:
    """(noise multiplier, epsilon by RDP, epsilon by PRV) for one Gaussian release of sensitivity 1: opacus'
    search for the multiplier at sample rate 1, one step; (0, inf, inf) for epsilon = inf."""
    if math.isinf(epsilon):
        return 0.0, math.inf, math.inf
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        from opacus.accountants import PRVAccountant, RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier
    except ImportError:
        raise SelectionError(f"private selection needs opacus: {PRIVACY_EXTRA}") from None
    finally:  # opacus.utils.module_utils calls logging.basicConfig on import, which doubled every log line
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
    alphas = rdp_alphas()
    extra = accountant_kwargs(accountant)
    with quiet_accounting(), warnings.catch_warnings(), np.errstate(divide="ignore"):
        # PRV at sample rate 1 takes log(1 - q) = -inf in a branch np.where then discards
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            sigma = get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=1.0,
                steps=1,
                accountant=accountant,
                **extra,
            )
        except ValueError as e:  # opacus: "The privacy budget is too low."
            msg = f"epsilon={epsilon} at delta={delta}: {e} (it needs more noise than opacus searches)"
            raise SelectionError(msg) from None
        rdp, prv = RDPAccountant(), PRVAccountant()
        rdp.history = [(sigma, 1.0, 1)]
        prv.history = [(sigma, 1.0, 1)]
        return float(sigma), float(rdp.get_epsilon(delta, alphas=alphas)), float(prv.get_epsilon(delta))


def private_counts(labels: np.ndarray, k: int, users: Sequence[str] | None = None) -> np.ndarray:
    """Private samples per cluster. With users, each user's records share one count (1/m to each of its m
    records' clusters), so removing a user changes the histogram by a vector of L1 (hence L2) norm 1."""
    if users is None:
        return np.bincount(labels, minlength=k).astype(np.float64)
    per_user: dict[str, int] = {}
    for u in users:
        per_user[u] = per_user.get(u, 0) + 1
    weights = np.array([1.0 / per_user[u] for u in users])
    return np.bincount(labels, weights=weights, minlength=k).astype(np.float64)


def gaussian_noise(std: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """N(0, std^2) per bin, as the sum of four draws halved: opacus' secure-mode recipe against floating-point
    attacks on the Gaussian sampler (opacus.optimizers.optimizer._generate_noise, arXiv 2107.10138)."""
    if std == 0:
        return np.zeros(size)
    return sum((rng.normal(0.0, std, size) for _ in range(4)), np.zeros(size)) / 2.0


def allocate(weights: np.ndarray, capacity: np.ndarray, n: int) -> np.ndarray:
    """Integer counts per cluster adding up to n, proportional to weights (largest remainder), none above its
    capacity: a full cluster's excess goes to the others by weight, and once every weighted cluster is full,
    the rest to the clusters with room in proportion to their room (the public pool's own shares)."""
    counts = np.zeros(len(weights), dtype=np.int64)
    active = (weights > 0) & (capacity > 0)
    while (left := n - int(counts.sum())) > 0:
        w = np.where(active, weights, 0.0) if active.any() else (capacity - counts).astype(np.float64)
        add = np.minimum(_largest_remainder(left * w / w.sum(), left), capacity - counts)
        counts += add
        active &= counts < capacity
    return counts


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    counts = np.floor(quotas).astype(np.int64)
    order = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return counts
