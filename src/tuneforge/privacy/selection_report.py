"""What a selection reports: the plot of cluster shares (selection.png) and the summary the CLI prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_shares(summary: dict[str, Any], path: Path) -> Path:
    """Per cluster: its share of the public pool, of the noised private histogram, and of the selection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = summary["histogram"]
    public = np.asarray(h["public"], dtype=np.float64)
    selected = np.asarray(h["selected"], dtype=np.float64)
    bars = {
        "public pool": public / public.sum(),
        "private (noised)" if summary["private"] else "private (no noise)": np.asarray(h["private_shares"]),
        "selected": selected / max(selected.sum(), 1.0),
    }
    k = len(public)
    x = np.arange(k)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * k + 2), 4), dpi=110)
    for i, (label, values) in enumerate(bars.items()):
        ax.bar(x + (i - 1) * 0.28, values, width=0.28, label=label, color=("#9ecae1", "#e6550d", "#31a354")[i])
    eps = "inf (no noise)" if summary["epsilon"] is None else f"{summary['epsilon']:g}"
    ax.set_title(f"cluster shares: epsilon = {eps}, delta = {summary['delta']:g}, {summary['selected']} selected")
    ax.set_xlabel("public cluster")
    ax.set_ylabel("share")
    ax.set_xticks(x, [str(i) for i in x], fontsize=7 if k > 30 else 9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def selection_markdown(summary: dict[str, Any], top: int = 10) -> str:
    """The privacy line, the datasets written and the clusters that most of the selection came from."""
    h = summary["histogram"]
    if summary["private"]:
        privacy = (
            f"epsilon = {summary['epsilon']:g} (RDP {summary['epsilon_rdp']:.3f}, PRV {summary['epsilon_prv']:.3f}), "
            f"delta = {summary['delta']:g}, noise multiplier {summary['noise_multiplier']:.4g} "
            f"(calibrated with {summary['calibrated_with'].upper()}); unit: {summary['privacy_unit']}"
        )
    else:
        privacy = "epsilon = inf: the non-private baseline (no noise)"
    public_total, n = sum(h["public"]), max(summary["selected"], 1)
    order = sorted(range(len(h["public"])), key=lambda c: (-h["selected"][c], c))[:top]
    lines = [
        f"Selected {summary['selected']} of {summary['public_size']} public samples in {summary['clusters']} "
        f"clusters; {privacy}.",
        "",
        "| cluster | public share | private share (noised) | selected share | selected |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {c} | {h['public'][c] / public_total:.3f} | {h['private_shares'][c]:.3f} | {h['selected'][c] / n:.3f} "
        f"| {h['selected'][c]} |"
        for c in order
    ]
    lines += ["", "| dataset | format | rows | public datasets |", "|---|---|---:|---|"]
    lines += [
        f"| `{k}` | {d['format']} | {d['rows']} | {', '.join(d['public'])} |" for k, d in summary["datasets"].items()
    ]
    if summary["fallback"]:
        lines += ["", f"Note: {summary['fallback']}."]
    return "\n".join(lines) + "\n"


__all__ = ["plot_shares", "selection_markdown"]
