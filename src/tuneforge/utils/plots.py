"""PNG plots written into a run folder (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_loss(records: Sequence[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Training loss per step (with a smoothed line) and validation loss, if any; for a DP-SGD run also the ε
    spent by each accountant, on a second axis. None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
    val = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r and "step" in r]
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="#9ecae1", lw=1, label="train loss")
        if len(losses) >= 5:
            ax.plot(steps, _ema(losses, 0.8), color="#08519c", lw=2, label="train loss (smoothed)")
    if val:
        vsteps, vlosses = zip(*val, strict=True)
        ax.plot(vsteps, vlosses, "o-", color="#e6550d", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    spent = {k: [(r["step"], r[k]) for r in records if k in r and "step" in r] for k in ("epsilon_prv", "epsilon_rdp")}
    if any(spent.values()):
        eps_ax = ax.twinx()
        for (key, points), color in zip(spent.items(), ("#31a354", "#756bb1"), strict=True):
            if points:
                xs, ys = zip(*points, strict=True)
                eps_ax.plot(xs, ys, "--", color=color, lw=1.5, label=f"ε spent ({key.split('_')[1].upper()})")
        eps_ax.set_ylabel("ε spent")
        eps_ax.set_ylim(bottom=0)
        more = eps_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_rewards(records: Sequence[dict[str, Any]], out: Path, title: str) -> Path | None:
    """RL stages (grpo): the mean total reward per step with its std as a band, each reward's own mean, and the
    share of groups whose answers all scored alike (no learning signal) on a second axis. None without rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if "reward" in r and "step" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    mean = [float(r["reward"]) for r in rows]
    std = [float(r.get("reward_std", 0.0)) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    low = [m - s for m, s in zip(mean, std, strict=True)]
    high = [m + s for m, s in zip(mean, std, strict=True)]
    ax.fill_between(steps, low, high, color="#9ecae1", alpha=0.35, label="reward ± std")
    ax.plot(steps, mean, color="#9ecae1", lw=1)
    if len(mean) >= 5:
        ax.plot(steps, _ema(mean, 0.8), color="#08519c", lw=2, label="reward (smoothed)")
    names = sorted(
        {
            k[len("rewards/") : -len("/mean")]
            for r in rows
            for k in r
            if k.startswith("rewards/") and k.endswith("/mean")
        }
    )
    for name, color in zip(names, ("#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b", "#8c6d31"), strict=False):
        pts = [(r["step"], r[f"rewards/{name}/mean"]) for r in rows if f"rewards/{name}/mean" in r]
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, _ema(ys, 0.8) if len(ys) >= 5 else ys, "--", color=color, lw=1.2, label=f"{name} (unweighted)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    flat = [(r["step"], r["frac_reward_zero_std"]) for r in rows if "frac_reward_zero_std" in r]
    if flat:
        share = ax.twinx()
        xs, ys = zip(*flat, strict=True)
        smooth = len(ys) >= 5  # with one prompt per step the raw share is 0 or 1: only its trend reads
        share.plot(xs, _ema(ys, 0.8) if smooth else ys, ":", color="#636363", lw=1.5,
                   label="groups with no reward spread" + (" (smoothed)" if smooth else ""))  # fmt: skip
        share.set_ylabel("share of groups")
        share.set_ylim(0, 1.05)
        more = share.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _ema(values: Sequence[float], beta: float) -> list[float]:
    out, acc = [], values[0]
    for v in values:
        acc = beta * acc + (1 - beta) * v
        out.append(acc)
    return out
