"""The comparison's outputs: compare.md (the table and the recommendation), compare.csv, compare.json and
compare.png (score against serving cost, the Pareto front drawn through), rewritten after every arm.

Rows come from each arm's records: its trained run's (tuneforge.sweep's point record: steps, losses, seconds,
trainable parameters, peak RSS of the training process) and its answers' (compare.worker: responses, answering
seconds (wall clock and process CPU), tokens, peak RSS of the answering process). The scores are computed here,
from the responses, by the task's own `score`, so all arms are scored alike on the same items; intervals are
tuneforge.eval.stats' bootstrap over items, and "vs best" the paired bootstrap of each arm minus the best arm on
the same resamples.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from tuneforge.compare.forgetting import columns
from tuneforge.compare.pick import best_arm, pareto_front, recommend, recommendation_text, rule_of
from tuneforge.compare.plan import Arm, ComparePlan
from tuneforge.eval.lm import Scored
from tuneforge.eval.metrics import MetricRows
from tuneforge.eval.stats import bootstrap, paired_bootstrap, resample_indices
from tuneforge.eval.tasks import Response

COLUMNS = (
    "arm", "kind", "method", "context", "status", "metric", "score", "ci95_low", "ci95_high",
    "vs_best", "vs_best_low", "vs_best_high", "pareto", "recommended", "answer_s_per_1k",
    "answer_cpu_s_per_1k", "tokens_per_1k", "prompt_tokens", "completion_tokens", "virtual_tokens",
    "trainable_params", "total_params", "train_s", "answer_s", "wall_s", "train_peak_rss_mb",
    "answer_peak_rss_mb", "peak_rss_mb", "answer_cuda_peak_mb",
    "steps", "train_loss", "run_dir", "how", "error",
)  # fmt: skip


def _clean(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), digits)


def _primary_rows(plan: ComparePlan, answers: dict[str, Any]) -> MetricRows:
    task = plan.source.task
    responses = [Response(tuple(Scored(lp, n) for lp, n in r["scores"]), r["text"]) for r in answers["responses"]]
    return task.task.score(task.items, responses).metrics[task.task.primary]


def arm_row(plan: ComparePlan, arm: Arm, trained: dict[str, Any] | None, answers: dict[str, Any] | None) -> dict:
    """One arm's row, before the comparison across arms (score and its interval come in `finish_rows`)."""
    point = plan.run_of(arm)
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(arm=arm.label, kind=arm.spec.kind, method=arm.spec.method, context=arm.context)
    row["metric"] = plan.source.task.task.primary
    trained = trained or {}
    if point is not None:
        row.update({k: trained.get(k) for k in ("steps", "train_loss", "trainable_params", "run_dir")})
        row["train_s"] = trained.get("wall_s")  # the training process's wall time, loading and saving included
        row["train_peak_rss_mb"] = trained.get("peak_rss_mb")
        row["how"] = trained.get("how")
    else:
        row["trainable_params"] = 0
    answers = answers or {}
    errors = [r.get("error") for r in (trained if point is not None else {}, answers) if r.get("status") == "failed"]
    if errors:
        row.update(status="failed", error=str(errors[0]).replace("\n", " ")[:300])
    elif answers.get("status") != "ok":
        row["status"] = "pending"
    else:
        n = max(1, answers["n"])
        prompt, completion = sum(answers["prompt_tokens"]) / n, sum(answers["completion_tokens"]) / n
        row.update(
            status="ok",
            answer_s_per_1k=round(answers["answer_s"] / n * 1000, 3),
            # answers of an older worker have no CPU seconds (a finished arm is read back as it is)
            answer_cpu_s_per_1k=round(answers["answer_cpu_s"] / n * 1000, 3) if "answer_cpu_s" in answers else None,
            answer_cuda_peak_mb=answers.get("cuda_peak_mb"),
            tokens_per_1k=round((prompt + completion) * 1000),
            prompt_tokens=round(prompt, 1),
            completion_tokens=round(completion, 1),
            virtual_tokens=answers.get("virtual_tokens"),
            total_params=answers.get("total_params"),
            answer_s=answers.get("wall_s"),
            answer_peak_rss_mb=answers.get("peak_rss_mb"),
        )
        row["how"] = row["how"] or answers.get("how")
    peaks = [p for p in (row["train_peak_rss_mb"], row["answer_peak_rss_mb"]) if p is not None]
    row["peak_rss_mb"] = max(peaks) if peaks else None
    walls = [w for w in (row["train_s"], row["answer_s"]) if w is not None]
    row["wall_s"] = round(sum(walls), 1) if walls else None
    return row


def finish_rows(plan: ComparePlan, rows: list[dict], answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Scores with intervals, the paired difference to the best arm, the Pareto front and the recommendation."""
    cfg = plan.cfg
    n = len(plan.source.task.items)
    idx = resample_indices(n, cfg.eval.bootstrap, cfg.eval.seed)
    metric_rows = {r["arm"]: _primary_rows(plan, answers[r["arm"]]) for r in rows if r["status"] == "ok"}
    higher = next((m.higher_is_better for m in metric_rows.values()), True)
    for r in rows:
        if r["arm"] in metric_rows:
            iv = bootstrap(metric_rows[r["arm"]], idx)
            r.update(score=_clean(iv.value), ci95_low=_clean(iv.low), ci95_high=_clean(iv.high))
    best = best_arm(rows, higher)
    for r in rows:
        if best is not None and r["arm"] in metric_rows:
            diff = paired_bootstrap(metric_rows[best["arm"]], metric_rows[r["arm"]], idx)
            r.update(vs_best=_clean(diff.value), vs_best_low=_clean(diff.low), vs_best_high=_clean(diff.high))
    front = pareto_front(rows, higher)
    pick = recommend(rows, higher)  # by the paired differences just computed (pick.py)
    for r in rows:
        r["pareto"] = r["arm"] in front
        r["recommended"] = pick is not None and r["arm"] == pick["arm"]
    return {
        "higher_is_better": higher,
        "best": best["arm"] if best else None,
        "pareto_front": front,
        "recommended": pick["arm"] if pick else None,
        "rule": rule_of(rows),
        "recommendation": recommendation_text(rows, higher),
    }


def _f(x: Any, fmt: str = ".3f", signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return format(x, ("+" if signed else "") + fmt)


def _ci(lo: Any, hi: Any, signed: bool = False) -> str:
    return "" if lo is None else f" [{_f(lo, signed=signed)}, {_f(hi, signed=signed)}]"


def _general(r: dict[str, Any], task: str) -> str:
    """A general task's cell: run - base [95% CI] and the verdict, `base` for an arm on the base model."""
    diff, low, high, verdict = columns(task)
    if r.get(diff) is None:
        return r.get(verdict) or ""
    return f"{_f(r[diff], signed=True)}{_ci(r[low], r[high], True)} {r[verdict]}"


def _general_note(f: dict[str, Any]) -> str:
    """What the general columns are, or why they are empty."""
    head = f"General benchmarks (compare.forgetting: {f['config']}; the forgetting report in {f['folder']}): "
    if f["status"] == "ok":
        metrics = ", ".join(
            f"{t} {m['metric']}{'' if m['higher_is_better'] else ' (lower is better)'} on {m['n']} items, base "
            f"{_f(m['base'])}"
            for t, m in f["tasks"].items()
        )
        return (
            head + f"each trained arm's run - the base model on the task's primary metric ({metrics}), paired "
            f"bootstrap 95% intervals ({f['bootstrap']} resamples, seed {f['seed']}); forgot / no measurable change / "
            "improved: the interval wholly on the bad side of 0, holding it, wholly on the good side. `base`: the arm "
            f"answers with the base model, no change by construction ({f['how']})."
        )
    if f["status"] == "failed":
        return head + f"failed: {f['error']}"
    if f["status"] == "skipped":
        return head + f"not made: {f['why']}."
    return head + "pending (made once every arm is scored)."


def markdown(summary: dict[str, Any]) -> str:
    s, rows = summary["settings"], summary["rows"]
    general = (summary.get("forgetting") or {}).get("general_tasks", [])
    lines = [
        f"# Compare: {s['name']}",
        "",
        f"{s['about']}. Model {s['model']}. Score: {s['metric']} on {s['items']} held-out items, 95% intervals from "
        f"{s['bootstrap']} bootstrap resamples over items (eval.seed {s['seed']}); vs best: the paired difference to "
        f"the best arm ({summary['best']}). Serving cost: tokens per 1,000 answers (prompt + completion), and answer "
        f"seconds (wall clock; process CPU seconds in brackets) per 1,000 answers, measured here ({s['cpu']}, "
        f"batches of {s['batch_size']}, {s['threads']} threads).",
        "",
        "| arm | score [95% CI] | vs best [95% CI] | answer s / 1k answers, wall (CPU) | tokens / 1k answers | "
        "trainable params | "
        "wall s (train + answer) | peak RSS MB (train / answer) | Pareto |"
        + "".join(f" {t}: run - base [95% CI] |" for t in general),
        "|---|---|---|---:|---:|---:|---:|---|---|" + "---|" * len(general),
    ]
    for r in rows:
        extra = "".join(f" {_general(r, t)} |" for t in general)
        if r["status"] != "ok":
            why = f"{r['status']}" + (f": {r['error']}" if r["error"] else "")
            lines.append(f"| {r['arm']} | {why} | | | | | {_f(r['wall_s'], '.1f')} | | |{extra}")
            continue
        name = f"**{r['arm']}**" if r["recommended"] else r["arm"]
        wall = f"{_f(r['wall_s'], '.1f')} ({_f(r['train_s'] or 0, '.1f')} + {_f(r['answer_s'], '.1f')})"
        peak = f"{_f(r['train_peak_rss_mb'], '.0f')} / {_f(r['answer_peak_rss_mb'], '.0f')}"
        lines.append(
            f"| {name} | {_f(r['score'])}{_ci(r['ci95_low'], r['ci95_high'])} | "
            f"{_f(r['vs_best'], signed=True)}{_ci(r['vs_best_low'], r['vs_best_high'], True)} | "
            f"{_f(r['answer_s_per_1k'], '.1f')} ({_f(r['answer_cpu_s_per_1k'], '.1f')}) | {r['tokens_per_1k']:,} | "
            f"{r['trainable_params'] or 0:,} | {wall} | {peak} | {'yes' if r['pareto'] else ''} |{extra}"
        )
    lines += [""] + ([_general_note(summary["forgetting"]), ""] if general else [])
    lines += [f"Recommendation: {summary['recommendation']}", ""]
    if summary.get("chance") is not None:
        lines += [f"Chance: {summary['chance']:.3f}.", ""]
    runs = sorted({r["run_dir"] for r in rows if r["run_dir"]})
    if runs:
        lines += ["Trained runs (for `tuneforge serve --run`, `tuneforge export`): " + ", ".join(runs) + ".", ""]
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict[str, Any]) -> None:
    (out / "compare.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "compare.md").write_text(markdown(summary), encoding="utf-8")
    general = (summary.get("forgetting") or {}).get("general_tasks", [])
    fields = list(COLUMNS) + [c for t in general for c in columns(t)]
    with (out / "compare.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary["rows"])
    plot(summary, out / "compare.png")


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    """Score (95% interval) against answer seconds (wall clock) per 1k answers, each arm labelled, the Pareto
    front as a step line, the recommended arm ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if r["status"] == "ok" and r["score"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    for r in rows:
        lo = r["score"] - r["ci95_low"] if r["ci95_low"] is not None else 0.0
        hi = r["ci95_high"] - r["score"] if r["ci95_high"] is not None else 0.0
        colour = "tab:orange" if r["pareto"] else "tab:blue"
        ax.errorbar(
            r["answer_s_per_1k"], r["score"], yerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o", color=colour, capsize=3
        )
        ax.annotate(r["arm"], (r["answer_s_per_1k"], r["score"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if r["recommended"]:
            ax.scatter(
                [r["answer_s_per_1k"]],
                [r["score"]],
                s=220,
                facecolors="none",
                edgecolors="tab:green",
                lw=2,
                label=f"recommended: {r['arm']}",
            )
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["answer_s_per_1k"])
    ax.step(
        [r["answer_s_per_1k"] for r in front],
        [r["score"] for r in front],
        where="post",
        color="tab:orange",
        alpha=0.6,
        label="Pareto front",
    )
    if summary.get("chance") is not None:
        ax.axhline(summary["chance"], color="grey", linestyle="--", lw=1, label=f"chance {summary['chance']:.2f}")
    costs = [r["answer_s_per_1k"] for r in rows]
    if min(costs) > 0 and max(costs) / min(costs) > 20:
        ax.set_xscale("log")
    s = summary["settings"]
    ax.set_xlabel(f"serving cost: answer seconds (wall clock) per 1,000 answers ({s['cpu']})", fontsize=8)
    ax.set_ylabel(f"{s['metric']} (95% bootstrap interval)")
    ax.set_title(f"compare {s['name']}: score vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["COLUMNS", "arm_row", "finish_rows", "markdown", "plot", "write_outputs"]
