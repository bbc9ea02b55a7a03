"""PNG plots written into a run folder (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_loss(records: Sequence[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Training loss per step (with a smoothed line) and validation loss, if any; None when nothing was logged."""
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
    ax.legend()
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
