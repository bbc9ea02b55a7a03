"""The forgetting report's files: forgetting.json (every number), forgetting.md (the tables and verdicts) and
forgetting.png (each task's run - base difference with its paired 95% interval, coloured by verdict)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneforge.eval.forgetting import ForgettingReport, TaskChange

COLOURS = {"forgot": "tab:red", "worse": "tab:red", "improved": "tab:green"}  # the rest: grey


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _diff(c: TaskChange) -> str:
    ci = "" if c.low is None or c.high is None else f" [{_fmt(c.low, True)}, {_fmt(c.high, True)}]"
    return _fmt(c.diff, True) + ci


def _metric(c: TaskChange) -> str:
    return c.metric + ("" if c.higher_is_better else " (lower is better)")


def _table(changes: list[TaskChange], source: bool) -> list[str]:
    head = ["task", "run", "n", "metric", "base", "run score", "run - base [95% CI]", "verdict"]
    head += ["report"] if source else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in changes:
        row = [c.task, c.run, str(c.n), _metric(c), _fmt(c.base), _fmt(c.after), _diff(c), c.verdict]
        lines.append("| " + " | ".join(row + ([f"`{c.source}`"] if source else [])) + " |")
    return lines


def markdown(report: ForgettingReport) -> str:
    d = report.data
    base = report.base
    under = f" + {base.adapter}" + (" (merged)" if base.merge_adapter else "") if base.adapter else ""
    limit = f"a seeded sample of {d['limit']} items per task" if d["limit"] else "every item"
    lines = [
        "# Forgetting report",
        "",
        f"- **base**: {base.path}{under} (the model the runs were trained from)",
        *[f"- **{r.label}**: {r.path} ({r.output})" for r in report.runs],
        "",
        f"General benchmarks: {limit}, seed {d['seed']}; differences are run - base with paired bootstrap 95% "
        f"intervals ({d['bootstrap']} resamples over the same items). Verdict: *forgot* when the interval lies wholly "
        "on the bad side of 0 (below it; above it for lower-is-better metrics), *improved* wholly on the good side, "
        "*no measurable change* when it holds 0.",
        "",
        "## General benchmarks, before and after",
        "",
        *_table(report.general, source=False),
        "",
        "## Target task gain",
        "",
    ]
    if report.target:
        lines += _table(report.target, source=True)
    else:
        lines.append(
            "No target task: no eval report in the runs' eval/ folders compares them with this base. Pass "
            "`--target CONFIG` (an eval config of the target task) to evaluate it in the same call."
        )
    lines += ["", "## Summary", ""]
    for r in report.runs:
        general = report.changes(r.label)
        forgot = [c.task for c in general if c.verdict == "forgot"]
        gains = ", ".join(f"{c.task} {_diff(c)} ({c.verdict})" for c in report.changes(r.label, "target"))
        lines.append(
            f"- **{r.label}**: forgot {len(forgot)} of {len(general)} general tasks"
            + (f" ({', '.join(forgot)})" if forgot else "")
            + f"; improved {sum(c.verdict == 'improved' for c in general)}"
            + (f"; target: {gains}" if gains else "; target: not measured")
        )
    return "\n".join(lines) + "\n"


def plot(report: ForgettingReport, out: Path) -> Path | None:
    """One panel per task (metrics differ in scale): each run's difference to the base with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("general", c) for c in report.general] + [("target", c) for c in report.target]
    tasks = list(dict.fromkeys((role, c.task, _metric(c)) for role, c in rows))
    if not tasks:
        return None
    labels = [r.label for r in report.runs]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.0, 0.5 + (0.45 * len(labels) + 0.7) * len(tasks)), dpi=110)
    for ax, (role, task, metric) in zip(list(getattr(axes, "flat", [axes])), tasks, strict=True):
        mine = [c for r, c in rows if r == role and c.task == task]
        for y, c in enumerate(mine):
            if c.diff is None:
                continue
            lo = c.diff - c.low if c.low is not None else 0.0
            hi = c.high - c.diff if c.high is not None else 0.0
            colour = COLOURS.get(c.verdict, "tab:gray")
            ax.errorbar([c.diff], [y], xerr=[[max(lo, 0.0)], [max(hi, 0.0)]], fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(mine)), [c.run for c in mine], fontsize=8)
        ax.set_ylim(-0.7, len(mine) - 0.3)
        ax.set_title(f"{role}: {task} — {metric}, run - base", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("forgetting: red forgot/worse, green improved, grey no measurable change", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_forgetting(report: ForgettingReport, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.data, indent=2, ensure_ascii=False)
    (out / "forgetting.json").write_text(text + "\n", encoding="utf-8")
    (out / "forgetting.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out / "forgetting.png")
    return out


__all__ = ["markdown", "plot", "write_forgetting"]
