"""The summary and the report of a trust check (audit/trust.py): each variant's headline scores, their erosion
against fp32 with paired intervals, robustness (noisy - clean), and report.md / trust.png."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.config import RunConfig
from tuneforge.eval.metrics import MetricRows
from tuneforge.eval.report import EvalReport, TaskResult, direction, markdown
from tuneforge.eval.run import LoadedTask
from tuneforge.eval.stats import bootstrap, paired_bootstrap, resample_indices

MARKER = "trust"  # the key of report.json that says a folder holds a trust check (--overwrite may replace it)


def badness(x: Any, rows: MetricRows) -> Any:
    """How far a score is from good: the distance to a bias score's ideal, else minus or plus the score."""
    if rows.ideal is not None:
        return np.abs(np.asarray(x) - rows.ideal)
    return -np.asarray(x) if rows.higher_is_better else np.asarray(x)


def _ci(value: float, reps: np.ndarray) -> dict[str, float | None]:
    finite = reps[np.isfinite(reps)]
    lo, hi = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
    clean = lambda x: None if not np.isfinite(x) else round(float(x), 6)  # noqa: E731  (JSON has no NaN)
    return {"value": clean(value), "ci95_low": clean(lo), "ci95_high": clean(hi)}


def _verdict(erosion: dict[str, float | None]) -> str:
    lo, hi = erosion["ci95_low"], erosion["ci95_high"]
    if lo is None or hi is None:
        return "n/a"
    return "worse" if lo > 0 else "better" if hi < 0 else "no clear change"


def summarise(
    cfg: RunConfig, tasks: Sequence[LoadedTask], labels: Sequence[str], results: Sequence[TaskResult]
) -> dict[str, Any]:
    """Per task and headline metric: each variant's score, its difference to fp32 and whether it moved away from
    good (`erosion`, with a paired interval); per clean/noisy task pair, each variant's noisy - clean score."""
    got = {(r.task, r.model): r for r in results}
    ref, headline, robustness = labels[0], [], []
    for k, task in enumerate(tasks):
        idx = resample_indices(got[(task.name, ref)].n, cfg.eval.bootstrap, cfg.eval.seed + k)  # as build_report
        for metric in task.task.headline:
            rows = {label: got[(task.name, label)].scores.metrics[metric] for label in labels}
            iv = {label: bootstrap(r, idx) for label, r in rows.items()}
            entry: dict[str, Any] = {"task": task.name, "metric": metric, "ideal": rows[ref].ideal}
            entry |= {"higher_is_better": rows[ref].higher_is_better, "scores": {}, "vs_reference": {}}
            for label in labels:
                entry["scores"][label] = _ci(iv[label].value, iv[label].replicates)
                if label == ref:
                    continue
                diff = paired_bootstrap(rows[ref], rows[label], idx)
                bad = badness(iv[label].value, rows[ref]) - badness(iv[ref].value, rows[ref])
                reps = badness(iv[label].replicates, rows[ref]) - badness(iv[ref].replicates, rows[ref])
                erosion = _ci(float(bad), np.asarray(reps, dtype=float))
                entry["vs_reference"][label] = {
                    "difference": _ci(diff.value, diff.replicates),
                    "erosion": erosion,
                    "verdict": _verdict(erosion),
                }
            headline.append(entry)
        clean = _clean_twin(task, tasks)
        if clean is not None:
            robustness.append(_robustness(task, clean, labels, got, idx))
    return {"reference": ref, "headline": headline, "robustness": robustness}


def _clean_twin(task: LoadedTask, tasks: Sequence[LoadedTask]) -> LoadedTask | None:
    """The unperturbed task with the same data and settings as a perturbed one (same items), if it is there."""
    if task.task.spec.perturb is None:
        return None
    same = task.task.spec.model_dump(exclude={"name", "perturb"})
    ids = [i.example.id for i in task.items]
    for other in tasks:
        spec = other.task.spec
        same_items = [i.example.id for i in other.items] == ids
        if spec.perturb is None and spec.model_dump(exclude={"name", "perturb"}) == same and same_items:
            return other
    return None


def _robustness(
    noisy: LoadedTask, clean: LoadedTask, labels: Sequence[str], got: dict[tuple[str, str], TaskResult], idx: Any
) -> dict[str, Any]:
    metric = noisy.task.primary
    assert noisy.task.spec.perturb is not None
    entry: dict[str, Any] = {"task": clean.name, "noisy": noisy.name, "metric": metric}
    entry |= {"char_noise": noisy.task.spec.perturb.char_noise, "noisy_minus_clean": {}}
    for label in labels:
        diff = paired_bootstrap(
            got[(clean.name, label)].scores.metrics[metric], got[(noisy.name, label)].scores.metrics[metric], idx
        )
        entry["noisy_minus_clean"][label] = _ci(diff.value, diff.replicates)
    return entry


# --- writing -------------------------------------------------------------------------------------------------


def _cell(e: dict[str, Any], signed: bool = False) -> str:
    f = (lambda x: f"{x:+.3f}") if signed else (lambda x: f"{x:.3f}")
    if e["value"] is None:
        return "n/a"
    ci = "" if e["ci95_low"] is None else f" [{f(e['ci95_low'])}, {f(e['ci95_high'])}]"
    return f(e["value"]) + ci


def trust_markdown(report: EvalReport) -> str:
    d, t = report.data, report.data[MARKER]
    labels, ref = [m["label"] for m in d["models"]], t["reference"]
    others = labels[1:]
    lines = [
        f"# Trust of quantised variants: {t['source']}",
        "",
        "| variant | weights (MB) | how | seconds |",
        "|---|---|---|---|",
    ]
    for v in t["variants"]:
        lines.append(f"| {v['variant']} | {v['weights_bytes'] / 1e6:.1f} | {v['about']} | {v['seconds']:.0f} |")
    limit = f"a seeded sample of {d['limit']} items per task" if d["limit"] else "all items"
    lines += ["", f"Seed {d['seed']}, {limit}, 95% intervals from {d['bootstrap']} bootstrap resamples over items.", ""]
    lines += ["## Scores", "", "| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for h in t["headline"]:
        good = direction({"ideal": h["ideal"], "higher_is_better": h["higher_is_better"]})
        cells = [_cell(h["scores"][label]) for label in labels]
        lines.append(f"| {h['task']} | {h['metric']}{good} | " + " | ".join(cells) + " |")
    lines += ["", f"## Against {ref} (paired 95% intervals)", ""]
    lines += ["A variant is **worse** where the interval of its move away from good (towards the wrong side, or away"]
    lines += ["from a bias score's ideal) lies above zero, **better** where it lies below.", ""]
    lines += [
        "| task | metric | " + " | ".join(f"{o} - {ref}" for o in others) + " |",
        "|---|---|" + "---|" * len(others),
    ]
    for h in t["headline"]:
        cells = []
        for o in others:
            c = h["vs_reference"][o]
            mark = {"worse": " **worse**", "better": " **better**"}.get(c["verdict"], "")
            cells.append(_cell(c["difference"], signed=True) + mark)
        lines.append(f"| {h['task']} | {h['metric']} | " + " | ".join(cells) + " |")
    if t["robustness"]:
        lines += ["", "## Robustness: noisy - clean score, same items", ""]
        lines += ["| task | metric | char noise | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
        for r in t["robustness"]:
            cells = [_cell(r["noisy_minus_clean"][label], signed=True) for label in labels]
            lines.append(f"| {r['task']} | {r['metric']} | {r['char_noise']:g} | " + " | ".join(cells) + " |")
    lines += ["", t["note"], "", "## Every metric", ""] if t["note"] else ["", "## Every metric", ""]
    body = markdown(report).split("\n", 2)[2]  # the evaluation report without its title
    return "\n".join(lines) + "\n" + body.replace("\n## ", "\n### ")


def trust_plot(report: EvalReport, out: Path) -> Path | None:
    """One panel per headline metric: each variant's score with its 95% interval; a bias score's ideal dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = report.data[MARKER]["headline"]
    if not heads:
        return None
    labels = [m["label"] for m in report.data["models"]]
    cols = min(3, len(heads))
    rows = (len(heads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=110, squeeze=False)
    for ax, h in zip(axes.flat, heads, strict=False):
        vals = [h["scores"][label] for label in labels]
        v = np.array([e["value"] if e["value"] is not None else np.nan for e in vals])
        lo = np.array([e["ci95_low"] if e["ci95_low"] is not None else np.nan for e in vals])
        hi = np.array([e["ci95_high"] if e["ci95_high"] is not None else np.nan for e in vals])
        err = np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0).clip(min=0)
        ax.bar(range(len(labels)), v, yerr=err, capsize=3, color=["#555555", *["#4c72b0"] * (len(labels) - 1)])
        if h["ideal"] is not None:
            ax.axhline(h["ideal"], ls="--", color="#c44e52", lw=1)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{h['task']}: {h['metric']}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(heads) :]:
        ax.axis("off")
    fig.suptitle(f"{report.data[MARKER]['source']}: scores per variant (95% intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_trust(report: EvalReport, out: Path) -> None:
    """report.json, report.md and trust.png of a finished check in `out`."""
    (out / "report.json").write_text(json.dumps(report.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(trust_markdown(report), encoding="utf-8")
    trust_plot(report, out / "trust.png")
