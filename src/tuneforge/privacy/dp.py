"""DP-SGD's plan and ledger: the sample rate, steps and noise of a run, and the (ε, δ) it has spent.

All privacy mathematics is opacus': `get_noise_multiplier` calibrates the noise to a target ε, and its
RDPAccountant and PRVAccountant count every optimiser step (both are kept, whichever one the run is held to).
The training side (per-sample gradients, the Poisson loader, the Trainer) is in dp_trainer.py and dp_grads.py;
docs/privacy.md ("DP-SGD fine-tuning") explains the whole.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import PrivacyConfig, RunConfig
from tuneforge.errors import TuneforgeError

log = logging.getLogger("tuneforge.privacy")

INSTALL_HINT = "DP-SGD needs opacus: pip install 'tuneforge[privacy]'"
ACCOUNTANTS = ("rdp", "prv")
# RDP orders beyond opacus' defaults (which stop at 63): where the optimum lies past 63 (a single release at large
# epsilon, or few noisy steps at small noise) these keep the bound tight instead of warning "optimal order is the
# largest alpha", a warning the user cannot act on.
EXTRA_ALPHAS = [80.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0, 1024.0]


def rdp_alphas() -> list[float]:
    """The RDP orders every epsilon of tuneforge is computed over: opacus' defaults plus EXTRA_ALPHAS."""
    from opacus.accountants import RDPAccountant

    return [*RDPAccountant.DEFAULT_ALPHAS, *EXTRA_ALPHAS]


def accountant_kwargs(accountant: str) -> dict[str, Any]:
    """The get_epsilon / get_noise_multiplier keywords for `accountant`: the wider orders for RDP."""
    return {"alphas": rdp_alphas()} if accountant == "rdp" else {}


@contextmanager
def quiet_accounting() -> Iterator[None]:
    """opacus' PRV accountant sizes its domain with an RDP bound on opacus' default orders and warns about them;
    our own RDP figures use rdp_alphas(), so that warning says nothing about any number we report."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


class DPError(TuneforgeError, ValueError):
    """A DP-SGD run that cannot train as asked; the message says which setting or figure is at fault."""


def opacus() -> Any:
    """The opacus module, or a DPError naming the install extra. Import it through here first: opacus (1.6)
    calls logging.basicConfig when it is imported, which gives the root logger a handler and prints every tuneforge
    line twice; the handlers that import added are taken off again (tuneforge never configures the root logger)."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        import opacus as module
        import opacus.utils.module_utils  # the module that calls basicConfig
    except ImportError as e:
        raise DPError(f"{INSTALL_HINT} ({e})") from None
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
    return module


@dataclass(frozen=True, kw_only=True)
class PrivacyPlan:
    """What a DP-SGD run does, fixed before the model loads: how many privacy units there are and which training
    rows belong to each, the Poisson sample rate, the planned steps, the noise and δ."""

    unit: str  # "sample" or "user"
    units: int  # N, the number of privacy units in the training set
    members: tuple[tuple[int, ...], ...]  # unit -> its training rows (one row is drawn when the unit is sampled)
    sample_rate: float  # q: each unit's chance to be in a step's batch
    expected_batch: float  # q·N = train.batch_size × train.grad_accum
    physical_batch: int  # rows per forward pass at most (train.batch_size)
    steps: int  # planned optimiser steps
    noise_multiplier: float  # σ: noise std / max_grad_norm
    max_grad_norm: float  # C
    delta: float
    target_epsilon: float | None
    accountant: str  # the one the noise is calibrated with and the budget is held to
    budget_steps: int  # steps the target ε allows (= steps when calibrated); steps without a target

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("members")
        return d


def group_units(unit_ids: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """Row indices grouped by their unit id, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for row, unit in enumerate(unit_ids):
        groups.setdefault(unit, []).append(row)
    return tuple(tuple(rows) for rows in groups.values())


def planned_steps(cfg: RunConfig, sample_rate: float) -> int:
    """train.max_steps, else the epochs' steps: a Poisson "epoch" is 1/q steps, as opacus' sampler counts it."""
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    return max(1, math.ceil(cfg.train.epochs * int(1 / sample_rate)))


def plan_privacy(cfg: RunConfig, unit_ids: Sequence[str]) -> PrivacyPlan:
    """The run's plan from its config and the unit of each training row; every figure that cannot work is a
    DPError here, before the model loads."""
    opacus()
    p = cfg.privacy
    members = group_units(unit_ids)
    n = len(members)
    expected = cfg.train.batch_size * cfg.train.grad_accum
    if expected > n:
        raise DPError(
            f"train.batch_size × train.grad_accum = {expected} expected units per step, but the training set has "
            f"only {n} privacy units ({p.unit}s); the sample rate would exceed 1: lower the batch"
        )
    q = expected / n
    steps = planned_steps(cfg, q)
    delta = p.delta if p.delta is not None else 1.0 / n
    if p.epsilon is not None:
        sigma = calibrate(p, q, steps, delta)
        budget = budget_steps(p.epsilon, sigma, q, delta, steps, p.accountant)
    else:
        sigma = float(p.noise_multiplier or 0.0)
        budget = steps
    plan = PrivacyPlan(
        unit=p.unit,
        units=n,
        members=members,
        sample_rate=q,
        expected_batch=float(expected),
        physical_batch=cfg.train.batch_size,
        steps=steps,
        noise_multiplier=sigma,
        max_grad_norm=p.max_grad_norm,
        delta=delta,
        target_epsilon=p.epsilon,
        accountant=p.accountant,
        budget_steps=budget,
    )
    log.info(
        "privacy: %d %ss, sample rate %.4g (expected batch %d), %d steps, noise multiplier %.4g, C=%g, δ=%.3g%s",
        n,
        p.unit,
        q,
        expected,
        steps,
        sigma,
        p.max_grad_norm,
        delta,
        f", target ε={p.epsilon} ({p.accountant})" if p.epsilon is not None else "",
    )
    if budget == 0:
        raise DPError(f"privacy.epsilon={p.epsilon}: the {p.accountant} accountant allows not one step at this noise")
    if budget < steps:
        log.warning(
            "privacy: the budget ε=%s allows %d of the %d planned steps: training stops there", p.epsilon, budget, steps
        )
    if sigma == 0:
        log.warning("privacy.noise_multiplier=0: no noise, no privacy guarantee (ε = ∞)")
    return plan


def calibrate(p: PrivacyConfig, q: float, steps: int, delta: float) -> float:
    """opacus' get_noise_multiplier: the smallest noise (to its tolerance) whose ε after `steps` is below target."""
    from opacus.accountants.utils import get_noise_multiplier

    assert p.epsilon is not None
    try:
        with quiet_accounting():
            sigma = get_noise_multiplier(
                target_epsilon=p.epsilon,
                target_delta=delta,
                sample_rate=q,
                steps=steps,
                accountant=p.accountant,
                **accountant_kwargs(p.accountant),
            )
        return float(sigma)
    except ValueError as e:  # opacus: "The privacy budget is too low."
        raise DPError(
            f"privacy.epsilon={p.epsilon} cannot be reached in {steps} steps at sample rate {q:.4g} and δ={delta:.3g} "
            f"(opacus: {e}); allow a larger epsilon, fewer steps or a smaller batch"
        ) from None


def epsilon(accountant: str, history: list[tuple[float, float, int]], delta: float) -> float:
    """ε spent by `history` [(noise multiplier, sample rate, steps)], by opacus' accountant of that name."""
    from opacus.accountants import create_accountant

    if not history:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf  # no noise: no guarantee (and the PRV accountant is undefined there)
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    # PRV's numerical upper bound can dip below 0 where the true ε is about 0; ε >= 0 by definition
    with quiet_accounting():
        spent = acc.get_epsilon(delta=delta, **accountant_kwargs(accountant))
    return max(0.0, float(spent))


def budget_steps(target: float, sigma: float, q: float, delta: float, planned: int, accountant: str) -> int:
    """The most steps (up to `planned`) whose ε stays within `target`: `planned` after calibration; fewer if the
    accountant disagrees (the budget is never overshot). Found by bisection, ε growing with the steps."""
    if epsilon(accountant, [(sigma, q, planned)], delta) <= target:
        return planned
    low, high = 0, planned  # ε(low) <= target < ε(high)
    while high - low > 1:
        mid = (low + high) // 2
        if epsilon(accountant, [(sigma, q, mid)], delta) <= target:
            low = mid
        else:
            high = mid
    return low


class PrivacyLedger:
    """The accountants of a run, both stepped once per optimiser step (the DPOptimizer's step hook)."""

    def __init__(self, plan: PrivacyPlan) -> None:
        from opacus.accountants import create_accountant

        self.plan = plan
        self.accountants = {name: create_accountant(mechanism=name) for name in ACCOUNTANTS}

    def step_hook(self, optimizer: Any) -> None:
        """DPOptimizer.attach_step_hook's function: opacus' own per-accountant hooks, at the plan's sample rate."""
        for acc in self.accountants.values():
            acc.get_optimizer_hook_fn(sample_rate=self.plan.sample_rate)(optimizer)

    @property
    def steps(self) -> int:
        # opacus' len(accountant) counts history entries, not steps
        return sum(steps for _, _, steps in self.accountants[self.plan.accountant].history)

    @property
    def uniform(self) -> bool:
        """Every step at the plan's (σ, q): one history entry per accountant (opacus merges equal steps)."""
        return all(len(acc.history) <= 1 for acc in self.accountants.values())

    def spent(self, accountants: Sequence[str] = ACCOUNTANTS) -> dict[str, float]:
        return {name: epsilon(name, self.accountants[name].history, self.plan.delta) for name in accountants}

    def record(self, both: bool = True) -> dict[str, float]:
        """The figures a metrics.jsonl row carries: ε of the run's accountant (and of both, when `both`)."""
        chosen = self.plan.accountant
        spent = self.spent(ACCOUNTANTS if both else (chosen,))
        return {"epsilon": spent[chosen], **{f"epsilon_{name}": value for name, value in spent.items()}}

    def report(self) -> dict[str, Any]:
        """result.json's `privacy`: the final (ε, δ) by both accountants and what produced them."""
        spent = self.spent()
        finite = {name: (value if math.isfinite(value) else None) for name, value in spent.items()}
        plan = self.plan.summary()
        return {
            "epsilon": finite[self.plan.accountant],
            "delta": self.plan.delta,
            "epsilon_rdp": finite["rdp"],
            "epsilon_prv": finite["prv"],
            "guarantee": all(math.isfinite(v) for v in spent.values()),
            "steps": self.steps,
            **{k: v for k, v in plan.items() if k not in ("delta", "steps")},
            "planned_steps": plan["steps"],
        }

    # --- checkpoints: resuming must continue the accountants' history, never restart it ----------------------

    def save(self, path: Path) -> None:
        state = {name: dict(acc.state_dict()) for name, acc in self.accountants.items()}
        plan = {"noise_multiplier": self.plan.noise_multiplier, "sample_rate": self.plan.sample_rate}
        path.write_text(json.dumps({"accountants": state, "plan": plan}, indent=2), encoding="utf-8")

    def load(self, path: Path) -> None:
        if not path.is_file():
            raise DPError(
                f"cannot resume a DP-SGD run from {path.parent}: it holds no {path.name} (the accountants' history), "
                "so the privacy spent before it is unknown; train the run again from the start"
            )
        state = json.loads(path.read_text(encoding="utf-8"))
        saved = state["plan"]
        now = {"noise_multiplier": self.plan.noise_multiplier, "sample_rate": self.plan.sample_rate}
        if not all(math.isclose(saved[k], now[k], rel_tol=1e-9) for k in now):
            raise DPError(f"cannot resume from {path.parent}: it was trained with {saved}, this run plans {now}")
        for name, acc in self.accountants.items():
            acc.load_state_dict(
                {"history": [tuple(h) for h in state["accountants"][name]["history"]], "mechanism": name}
            )
        log.info(
            "privacy: resumed the accountants at step %d (ε=%.4g)",
            self.steps,
            self.spent([self.plan.accountant])[self.plan.accountant],
        )


__all__ = [
    "ACCOUNTANTS",
    "DPError",
    "PrivacyLedger",
    "PrivacyPlan",
    "budget_steps",
    "calibrate",
    "epsilon",
    "group_units",
    "opacus",
    "plan_privacy",
    "planned_steps",
]
