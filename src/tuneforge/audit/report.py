"""An audit's report: the markdown table printed and kept as audit.md, and its PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROC_PNG = "roc.png"
EXPOSURE_PNG = "exposure.png"


def markdown(report: dict[str, Any]) -> str:
    """Every check of `report` (audit.json's content) as a short table."""
    target = report["target"]
    lines = [f"# Audit of {target['label']}", "", f"model {target['model']}" + _adapter(target), ""]
    if "canaries" in report:
        lines += _canary_table(report["canaries"])
    if "mia" in report:
        lines += _mia_table(report["mia"])
    return "\n".join(lines) + "\n"


def _adapter(target: dict[str, Any]) -> str:
    return f" + {target['adapter']}" if target.get("adapter") else " (base model, no adapter)"


def _canary_table(c: dict[str, Any]) -> list[str]:
    how = (
        f"every one of the {c['space']:,} candidate secrets scored (exact ranks)"
        if c["mode"] == "exact"
        else f"{c['candidates_scored']:,} of {c['space']:,} candidate secrets sampled, skew-normal extrapolation"
    )
    lines = [
        "## Canary exposure (Carlini et al. 2019)",
        "",
        f"{how}; exposure lies in 0 .. {c['max_exposure']:.2f} bits, about 1.44 for a secret never seen.",
        "",
        "| canaries | repeats | n | exposure mean | median | min | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in c["by_repeats"]:
        who = "inserted" if g["inserted"] else "never inserted"
        lines.append(
            f"| {who} | {g['repeats']} | {g['n']} | {g['exposure_mean']:.2f} | {g['exposure_median']:.2f} | "
            f"{g['exposure_min']:.2f} | {g['exposure_max']:.2f} |"
        )
    return [*lines, ""]


def _ci(x: dict[str, Any]) -> str:
    return f"{x['value']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"


def _mia_table(m: dict[str, Any]) -> list[str]:
    def at(rate: str) -> str:
        x = m[f"tpr_at_fpr_{rate}"]
        shown = _ci(x) if rate == "0.01" else f"{x['value']:.3f}"
        return shown + ("" if x["resolved"] else " ‡")

    unresolved = not m["tpr_at_fpr_0.001"]["resolved"]  # the 1% rate needs 100 non-members, 0.1% needs 1000
    note = (
        "‡ too few non-members to reach this FPR (100 for 1%, 1000 for 0.1%): only thresholds with no false positive."
    )
    return [
        f"## Membership inference: {m['attack']}",
        "",
        f"{m['members']} training samples against {m['nonmembers']} held-out samples ({m['nonmember_source']}); "
        "AUC 0.5 is chance.",
        "",
        "| AUC [95% CI] | TPR @ 1% FPR [95% CI] | TPR @ 0.1% FPR | mean loss members | mean loss non-members |",
        "|---|---|---|---|---|",
        f"| {_ci(m['auc'])} | {at('0.01')} | {at('0.001')} | {m['loss_members_mean']:.4f} | "
        f"{m['loss_nonmembers_mean']:.4f} |",
        "",
        *([note, ""] if unresolved else []),
    ]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(mia: dict[str, Any], out: Path, title: str) -> Path:
    """The attack's ROC curve, linear and log-log (the low-FPR corner the MIA literature reads)."""
    plt = _pyplot()
    fpr, tpr = mia["roc"]["fpr"], mia["roc"]["tpr"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=110)
    label = f"loss attack, AUC {mia['auc']['value']:.3f}"
    for ax, log in zip(axes, (False, True), strict=True):
        ax.plot(fpr, tpr, color="#08519c", lw=2, label=label)
        floor = 1 / max(mia["nonmembers"], 1)
        ax.plot([floor if log else 0, 1], [floor if log else 0, 1], "--", color="grey", lw=1, label="chance")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(floor, 1)
            ax.set_ylim(1 / max(mia["members"], 1), 1)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_exposure(canaries: dict[str, Any], out: Path, title: str) -> Path:
    """Each canary's exposure against how often it was inserted (0: never), with the group means."""
    plt = _pyplot()
    groups = [g["repeats"] for g in canaries["by_repeats"]]
    fig, ax = plt.subplots(figsize=(7, 4.4), dpi=110)
    for x, repeats in enumerate(groups):
        values = [r["exposure"] for r in canaries["canaries"] if r["repeats"] == repeats]
        jitter = [x + 0.15 * ((i % 5) - 2) / 2 for i in range(len(values))]
        ax.scatter(jitter, values, s=18, alpha=0.7, color="#e6550d" if repeats == 0 else "#08519c")
        ax.hlines(sum(values) / len(values), x - 0.3, x + 0.3, color="black", lw=2)
    ax.axhline(
        canaries["max_exposure"], ls="--", color="grey", lw=1, label=f"log2 |R| = {canaries['max_exposure']:.2f}"
    )
    ax.set_xticks(range(len(groups)), ["never" if r == 0 else str(r) for r in groups])
    ax.set_xlabel("times inserted into the training split")
    ax.set_ylabel("exposure (bits)")
    ax.set_ylim(0, canaries["max_exposure"] * 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


__all__ = ["EXPOSURE_PNG", "ROC_PNG", "markdown", "plot_exposure", "plot_roc"]
