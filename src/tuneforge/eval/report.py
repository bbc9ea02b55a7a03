"""The evaluation report: report.json (every number), report.md (tables), scores.png (bar chart), and each
model's per-item predictions (predictions/<model>/<task>.jsonl) to see what went right or wrong.

The first model is the reference (the base model when it is evaluated): every other model gets, per task
and metric, the difference to it with a paired bootstrap 95% interval. "overall" is the mean of the tasks'
primary metrics on a 0-1 scale (perplexity, BLEU and bias scores with an ideal value are left out of it), with
an interval from the same resamples.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.eval.metrics import MetricRows
from tuneforge.eval.stats import Interval, bootstrap, mean_interval, paired_bootstrap, resample_indices
from tuneforge.eval.tasks import Task, TaskScores

if TYPE_CHECKING:
    from tuneforge.config import RunConfig
    from tuneforge.eval.run import ModelRef

NOT_IN_OVERALL = frozenset({"perplexity", "loss", "bleu"})  # not on a 0-1, higher-is-better scale


def in_overall(metric: str, rows: MetricRows) -> bool:
    """Whether a primary metric is a 0-1 score where higher is better (bias scores with an ideal value are not)."""
    return metric not in NOT_IN_OVERALL and rows.higher_is_better and rows.ideal is None


@dataclass(frozen=True)
class TaskResult:
    task: str
    model: str
    n: int
    seconds: float
    scores: TaskScores


@dataclass(frozen=True)
class EvalReport:
    data: dict[str, Any]  # what report.json holds
    results: list[TaskResult]

    def score(self, task: str, model: str, metric: str | None = None) -> float:
        entry = next(t for t in self.data["tasks"] if t["name"] == task)
        return float(entry["scores"][model][metric or entry["primary"]]["value"])


def _iv(i: Interval) -> dict[str, float | None]:
    clean = lambda x: None if math.isnan(x) else round(x, 6)  # noqa: E731  (JSON has no NaN)
    return {"value": clean(i.value), "ci95_low": clean(i.low), "ci95_high": clean(i.high)}


def build_report(
    cfg: RunConfig, tasks: Sequence[tuple[str, Task]], models: Sequence[ModelRef], results: Sequence[TaskResult]
) -> EvalReport:
    labels = [m.label for m in models]
    ref, seed, resamples = labels[0], cfg.eval.seed, cfg.eval.bootstrap
    task_data: list[dict[str, Any]] = []
    overall: dict[str, list[Interval]] = {label: [] for label in labels}
    overall_diff: dict[str, list[Interval]] = {label: [] for label in labels[1:]}
    for k, (name, task) in enumerate(tasks):
        got = {r.model: r for r in results if r.task == name}
        idx = resample_indices(got[ref].n, resamples, seed + k)
        primary_rows = got[ref].scores.metrics[task.primary]
        counted = in_overall(task.primary, primary_rows)
        scores: dict[str, dict[str, Any]] = {}
        comparisons = []
        for label in labels:
            scores[label] = {mt: _iv(bootstrap(rows, idx)) for mt, rows in got[label].scores.metrics.items()}
        for label in labels[1:]:
            for mt, rows in got[label].scores.metrics.items():
                diff = paired_bootstrap(got[ref].scores.metrics[mt], rows, idx)
                comparisons.append({"model": label, "reference": ref, "metric": mt, **_iv(diff)})
                if mt == task.primary and counted:
                    overall_diff[label].append(diff)
        contrasts = [
            {"model": a, "reference": b, "metric": mt, **_iv(paired_bootstrap(got[b].scores.metrics[mt], rows, idx))}
            for a, b in cfg.eval.contrasts
            if a in got and b in got  # evaluate checks the labels first; a partial report lacks some models
            for mt, rows in got[a].scores.metrics.items()
        ]
        if counted:
            for label in labels:
                overall[label].append(bootstrap(got[label].scores.metrics[task.primary], idx))
        task_data.append(
            {
                "name": name,
                **{key: getattr(task.spec, key) for key in ("type", "format", "path", "split", "fewshot")},
                "n": got[ref].n,
                "primary": task.primary,
                "higher_is_better": primary_rows.higher_is_better,
                "ideal": primary_rows.ideal,
                "in_overall": counted,
                "scores": scores,
                "comparisons": comparisons,
                "contrasts": contrasts,  # eval.contrasts: model - another model, the same resamples
                "seconds": {label: round(got[label].seconds, 2) for label in labels},
            }
        )
    data = {
        "name": cfg.name,
        "seed": seed,
        "limit": cfg.eval.limit,
        "bootstrap": resamples,
        "models": [
            {"label": m.label, "model": m.model.path, "adapter": str(m.adapter) if m.adapter else None} for m in models
        ],
        "reference": ref,
        "tasks": task_data,
        "overall": _overall(overall, overall_diff, ref),
    }
    return EvalReport(data, list(results))


def _overall(parts: dict[str, list[Interval]], diffs: dict[str, list[Interval]], ref: str) -> dict[str, Any]:
    if not any(parts.values()):
        return {}
    return {
        "tasks": len(next(iter(parts.values()))),
        "scores": {label: _iv(mean_interval(p)) for label, p in parts.items() if p},
        "comparisons": [{"model": label, "reference": ref, **_iv(mean_interval(d))} for label, d in diffs.items() if d],
    }


# --- writing -----------------------------------------------------------------------------------------


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(entry: dict[str, Any], signed: bool = True) -> str:
    lo, hi = entry["ci95_low"], entry["ci95_high"]
    return "" if lo is None else f" [{_fmt(lo, signed)}, {_fmt(hi, signed)}]"


def direction(task: dict[str, Any]) -> str:
    """What a good primary score is, after its name in the tables."""
    if task.get("ideal") is not None:
        return f" (ideal {task['ideal']:g})"
    return "" if task["higher_is_better"] else " (lower is better)"


def markdown(report: EvalReport) -> str:
    d = report.data
    labels, ref = [m["label"] for m in d["models"]], d["reference"]
    others = labels[1:]
    lines = [f"# Evaluation: {d['name']}", ""]
    for m in d["models"]:
        lines.append(f"- **{m['label']}**: {m['model']}" + (f" + {m['adapter']}" if m["adapter"] else ""))
    limit = f"limit {d['limit']} items per task (seeded sample)" if d["limit"] else "all items"
    lines += [
        "",
        f"Seed {d['seed']}, {limit}, 95% intervals from {d['bootstrap']} paired bootstrap resamples "
        f"over items; differences are model - {ref}.",
        "",
        "## Summary (primary metric)",
        "",
    ]
    head = ["task", "n", "metric", *labels, *[f"{o} - {ref} [95% CI]" for o in others]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in d["tasks"]:
        p = t["primary"]
        diffs = [next(c for c in t["comparisons"] if c["model"] == o and c["metric"] == p) for o in others]
        row = [
            t["name"],
            str(t["n"]),
            p + direction(t),
            *[_fmt(t["scores"][label][p]["value"]) for label in labels],
            *[_fmt(c["value"], True) + _ci(c) for c in diffs],
        ]
        lines.append("| " + " | ".join(row) + " |")
    ov = d["overall"]
    if ov:
        row = [
            f"**overall** (mean of {ov['tasks']})",
            "",
            "",
            *[_fmt(ov["scores"][label]["value"]) for label in labels],
            *[_fmt(c["value"], True) + _ci(c) for c in ov["comparisons"]],
        ]
        lines.append("| " + " | ".join(row) + " |")
    head = ["task", "metric", *labels, *[f"{o} - {ref} [95% CI]" for o in others]]
    lines += ["", "## All metrics", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in d["tasks"]:
        for mt in t["scores"][ref]:
            cells = [_fmt(t["scores"][label][mt]["value"]) + _ci(t["scores"][label][mt], False) for label in labels]
            diffs = [c for o in others for c in t["comparisons"] if c["model"] == o and c["metric"] == mt]
            cells += [_fmt(c["value"], True) + _ci(c) for c in diffs]
            lines.append(f"| {t['name']} | {mt} | " + " | ".join(cells) + " |")
    lines += contrast_lines(d)
    lines += ["", "## Time (seconds)", "", "| task | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for t in d["tasks"]:
        lines.append(f"| {t['name']} | " + " | ".join(f"{t['seconds'][label]:.1f}" for label in labels) + " |")
    return "\n".join(lines) + "\n"


def contrast_lines(d: dict[str, Any]) -> list[str]:
    """The eval.contrasts table (primary metric): one column per pair, model - its own reference."""
    pairs = list(dict.fromkeys((c["model"], c["reference"]) for t in d["tasks"] for c in t.get("contrasts", [])))
    if not pairs:
        return []
    head = ["task", "metric", *[f"{a} - {b} [95% CI]" for a, b in pairs]]
    lines = ["", "## Contrasts (eval.contrasts, primary metric)", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for t in d["tasks"]:
        got = {(c["model"], c["reference"]): c for c in t.get("contrasts", []) if c["metric"] == t["primary"]}
        cells = [_fmt(got[p]["value"], True) + _ci(got[p]) if p in got else "" for p in pairs]
        lines.append(f"| {t['name']} | {t['primary']}{direction(t)} | " + " | ".join(cells) + " |")
    return lines


def plot(report: EvalReport, out: Path) -> Path | None:
    """Grouped bars of each task's primary metric per model, with 95% intervals; None if nothing fits 0-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    d = report.data
    labels = [m["label"] for m in d["models"]]
    tasks = [t for t in d["tasks"] if t["in_overall"]]
    if not tasks:
        return None
    names = [f"{t['name']}\n({t['primary']})" for t in tasks]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) * max(1, len(labels)) ** 0.5 + 2), 4.5), dpi=110)
    width = 0.8 / len(labels)
    x = np.arange(len(tasks))
    for j, label in enumerate(labels):
        vals = [t["scores"][label][t["primary"]] for t in tasks]
        v = np.array([e["value"] if e["value"] is not None else np.nan for e in vals])
        lo = np.array([e["ci95_low"] if e["ci95_low"] is not None else np.nan for e in vals])
        hi = np.array([e["ci95_high"] if e["ci95_high"] is not None else np.nan for e in vals])
        err = np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0).clip(min=0)
        ax.bar(x + (j - (len(labels) - 1) / 2) * width, v, width, yerr=err, capsize=2, label=label)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (95% bootstrap interval)")
    ax.set_title(f"{d['name']}: primary metric per task")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-\[\],]+", "_", name)


def write_report(report: EvalReport, out: Path) -> EvalReport:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    plot(report, out / "scores.png")
    for r in report.results:
        folder = out / "predictions" / _safe(r.model)
        folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(p, ensure_ascii=False, default=str) for p in r.scores.predictions]
        (folder / f"{_safe(r.task)}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


__all__ = ["EvalReport", "TaskResult", "build_report", "direction", "in_overall", "markdown", "plot", "write_report"]
