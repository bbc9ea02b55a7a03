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


def _ema(values: Sequence[float], beta: float) -> list[float]:
    out, acc = [], values[0]
    for v in values:
        acc = beta * acc + (1 - beta) * v
        out.append(acc)
    return out
