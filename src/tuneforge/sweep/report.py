"""The sweep's outputs: sweep.md (the table), sweep.csv, sweep.json and sweep.png, rewritten after every point
so that an interrupted sweep leaves a table of what it finished."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from tuneforge.sweep.folder import SweepFolder
from tuneforge.sweep.plan import LOSSES, Plan, Point, format_value

COLUMNS = (
    "point",
    "status",
    "how",
    "metric",
    "train_loss",
    "eval_loss",
    "tokens_per_s",
    "wall_s",
    "train_s",
    "steps",
    "trainable_params",
    "total_params",
    "peak_rss_mb",
    "run_dir",
    "error",
)


def make_row(plan: Plan, point: Point, record: dict[str, Any] | None) -> dict[str, Any]:
    """The point's row: its grid values, then what its record says (pending: no record yet)."""
    record = record or {"status": "pending"}
    row: dict[str, Any] = {"point": point.name, **point.values}
    row.update({c: record.get(c) for c in COLUMNS if c not in ("point", "metric")})
    row["metric"] = metric_value(plan.metric, record)
    if row["error"]:
        row["error"] = str(row["error"]).replace("\n", " ")[:300]
    for task, metrics in (record.get("scores") or {}).items():
        for name, value in metrics.items():
            row[f"{task}:{name}"] = value
    row["_higher_is_better"] = record.get("higher_is_better") or {}
    return row


def metric_value(metric: str, record: dict[str, Any]) -> float | None:
    if metric in LOSSES:
        return record.get(metric)
    task, _, name = metric.partition(":")
    scores = (record.get("scores") or {}).get(task) or {}
    return scores.get(name or (record.get("primary") or {}).get(task, ""))


def resolved_mode(plan: Plan, rows: list[dict[str, Any]]) -> str:
    """min or max: the sweep's, else the eval task's own direction (perplexity: lower is better), else max."""
    if plan.mode:
        return plan.mode
    task = plan.metric.partition(":")[0]
    for r in rows:
        higher = r["_higher_is_better"].get(task)
        if higher is not None and not plan.metric.partition(":")[2]:
            return "max" if higher else "min"
    return "max"


def best_row(plan: Plan, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in rows if r["status"] == "ok" and _finite(r["metric"])]
    if not ok:
        return None
    pick = max if resolved_mode(plan, rows) == "max" else min
    return pick(ok, key=lambda r: r["metric"])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def write_outputs(plan: Plan, folder: SweepFolder, rows: list[dict[str, Any]], state: str) -> None:
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    best = best_row(plan, rows)
    fields = list(dict.fromkeys(["point", *plan.keys, *COLUMNS[1:], *(k for r in public for k in r)]))
    with (folder.root / "sweep.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: _csv(v) for k, v in r.items()} for r in public)
    summary = {
        "state": state,
        "settings": {
            **plan.settings.model_dump(mode="json"),
            "metric": plan.metric,
            "mode": resolved_mode(plan, rows),
            "out": str(plan.out),
        },
        "identity": plan.identity,
        "best": best["point"] if best else None,
        "rows": public,
    }
    tmp = folder.summary.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    tmp.replace(folder.summary)
    (folder.root / "sweep.md").write_text(markdown(plan, rows, best), encoding="utf-8")
    plot(plan, rows, folder.root / "sweep.png")


def _csv(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "—"
    if kind == "int":
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return format_value(v).replace("|", "\\|")


def markdown(plan: Plan, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    mode = resolved_mode(plan, rows)
    done = sum(r["status"] != "pending" for r in rows)
    lines = [
        f"## tuneforge sweep: {plan.base.name}, {len(rows)} points ({done} done), backend {plan.settings.backend}",
        "",
        f"Metric: {plan.metric} ({'lower' if mode == 'min' else 'higher'} is better). Runs in `{plan.out}/runs/`; "
        "run the same command again to finish or extend the sweep (finished points are read back).",
        "",
    ]
    if best:
        values = ", ".join(f"{k}={_fmt(best[k])}" for k in plan.keys)
        lines += [f"Best: **{best['point']}** ({values}): {plan.metric} {_fmt(best['metric'])}", ""]
    head = [*plan.keys, "status", plan.metric, "train loss", "eval loss", "tokens/s", "wall s", "trainable params"]
    head.append("peak RSS MB")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(plan.keys) + "---|" + "---:|" * 7]
    for r in rows:
        mark = " (best)" if best is r else ""
        cells = [_fmt(r[k]) for k in plan.keys]
        cells += [r["status"] + mark, _fmt(r["metric"]), _fmt(r["train_loss"]), _fmt(r["eval_loss"])]
        cells += [_fmt(r["tokens_per_s"]), _fmt(r["wall_s"]), _fmt(r["trainable_params"], "int")]
        cells.append(_fmt(r["peak_rss_mb"]))
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed:", ""] + [f"- {r['point']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


# --- plot --------------------------------------------------------------------------------------------------


def plot(plan: Plan, rows: list[dict[str, Any]], path: Path) -> None:
    """The metric against each grid key (one panel per key); a heatmap when the grid has two keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in plan.keys if len(plan.grid[k]) > 1] or plan.keys  # a key of one value is no axis
    if len(keys) == 2:
        fig, ax = plt.subplots(figsize=(1.2 * len(plan.grid[keys[1]]) + 3.5, 0.8 * len(plan.grid[keys[0]]) + 2.5))
        _heatmap(ax, fig, plan, rows, keys)
    else:
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys) + 1, 4), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            _panel(ax, plan, rows, key, many=len(keys) > 1)
    better = "lower" if resolved_mode(plan, rows) == "min" else "higher"
    fig.suptitle(f"sweep {plan.base.name}: {plan.metric} ({better} is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax: Any, plan: Plan, rows: list[dict[str, Any]], key: str, many: bool) -> None:
    values = plan.grid[key]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = [float(v) for v in values] if numeric else list(range(len(values)))
    means = []
    for x, v in zip(xs, values, strict=True):
        ys = [r["metric"] for r in rows if r[key] == v and r["status"] == "ok" and _finite(r["metric"])]
        ax.scatter([x] * len(ys), ys, color="#9ecae1", zorder=2)
        means.append(sum(ys) / len(ys) if ys else math.nan)
    label = "mean over the other keys" if many else None
    ax.plot(xs, means, "o-", color="#08519c", lw=2, zorder=3, label=label)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(xs, [format_value(v) for v in values], rotation=30)
    ax.set_xlabel(key)
    ax.set_ylabel(plan.metric)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=8)


def _heatmap(ax: Any, fig: Any, plan: Plan, rows: list[dict[str, Any]], keys: list[str]) -> None:
    k0, k1 = keys
    v0, v1 = plan.grid[k0], plan.grid[k1]
    grid = [[math.nan] * len(v1) for _ in v0]
    for r in rows:
        if r["status"] == "ok" and _finite(r["metric"]):
            grid[v0.index(r[k0])][v1.index(r[k1])] = r["metric"]
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=plan.metric)
    for i in range(len(v0)):
        for j in range(len(v1)):
            text = "—" if math.isnan(grid[i][j]) else f"{grid[i][j]:.4g}"
            ax.text(j, i, text, ha="center", va="center", color="white", fontsize=9)
    ax.set_xticks(range(len(v1)), [format_value(v) for v in v1])
    ax.set_yticks(range(len(v0)), [format_value(v) for v in v0])
    ax.set_xlabel(k1)
    ax.set_ylabel(k0)
