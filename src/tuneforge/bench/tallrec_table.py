"""The TALLRec few-shot study's table (docs/recipes/tallrec.md; run by bench/tallrec_study.sh).

The study evaluates the base model and each arm (a LoRA run on 16 / 64 / 256 book samples) into a report folder
of its own, so an interrupted study redoes one model, not all. This combines them from their per-item
predictions: per task, each model's AUC with a bootstrap 95% interval and, for each arm, the paired 95% interval
of its AUC minus the base's (both on the same resampled items), with tuneforge.eval.stats — the functions,
seeds and resamples of the eval report itself, so the base's interval here is its report's.

    python -m tuneforge.bench.tallrec_table OUT      # reads OUT/eval/<model>/, writes OUT/tallrec.md and .json
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.eval.example import EvalError
from tuneforge.eval.metrics import MetricRows
from tuneforge.eval.stats import Interval, bootstrap, paired_bootstrap, resample_indices
from tuneforge.eval.tallrec_task import label_metrics

REFERENCE = "base"


@dataclass(frozen=True)
class Evaluated:
    """One model's report folder: its label, settings, per-task predictions and run facts."""

    folder: Path
    label: str
    report: dict[str, Any]
    predictions: dict[str, list[dict[str, Any]]]  # task -> the per-item records, in item order
    run: dict[str, Any]  # a trained arm's samples, steps, seconds, tokens/s (empty for the base)


def _json(path: Path) -> Any:
    if not path.is_file():
        raise EvalError(f"{path} is missing: is {path.parent} a finished `tuneforge eval` report folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def _run_facts(adapter: str | None) -> dict[str, Any]:
    if not adapter:
        return {}
    run = Path(adapter).parent
    result = _json(run / "result.json")
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    return {
        "samples": (config.get("data") or {}).get("mix_size"),
        "steps": result.get("steps"),
        "train_s": result.get("seconds"),
        "tokens_per_s": result.get("tokens_per_s"),
        "train_loss": result.get("train_loss"),
    }


def read_evaluated(folder: Path) -> Evaluated:
    """A report folder of one model; every task must have its predictions with p_yes and gold."""
    report = _json(folder / "report.json")
    models = report.get("models") or []
    if len(models) != 1:
        raise EvalError(f"{folder}/report.json holds {len(models)} models; the study writes one per folder")
    label = str(models[0]["label"])
    preds: dict[str, list[dict[str, Any]]] = {}
    for task in report["tasks"]:
        if task.get("type") != "tallrec":
            raise EvalError(f"{folder}: task {task['name']!r} is a {task.get('type')} task, not tallrec")
        found = sorted((folder / "predictions").glob(f"*/{task['name']}.jsonl"))
        if len(found) != 1:
            raise EvalError(f"{folder}/predictions holds {len(found)} files for task {task['name']!r}, not 1")
        rows = [json.loads(line) for line in found[0].read_text(encoding="utf-8").splitlines() if line.strip()]
        bad = next((i for i, r in enumerate(rows, 1) if "p_yes" not in r or r.get("gold") not in ("Yes", "No")), 0)
        if bad or len(rows) != task["n"]:
            where = f"line {bad} lacks p_yes or a Yes/No gold" if bad else f"{len(rows)} lines, {task['n']} items"
            raise EvalError(f"{found[0]}: {where}")
        preds[task["name"]] = rows
    return Evaluated(folder, label, report, preds, _run_facts(models[0].get("adapter")))


def _same_items(ref: Evaluated, other: Evaluated) -> None:
    for key in ("seed", "bootstrap", "limit"):
        if ref.report.get(key) != other.report.get(key):
            raise EvalError(
                f"{other.folder}: eval.{key}={other.report.get(key)!r} but {ref.folder} has {ref.report.get(key)!r}; "
                "score every model with the same eval settings"
            )
    if list(ref.predictions) != list(other.predictions):
        raise EvalError(f"{other.folder}: tasks {list(other.predictions)} differ from {ref.folder}'s")
    for task, rows in ref.predictions.items():
        if [r["id"] for r in rows] != [r["id"] for r in other.predictions[task]]:
            raise EvalError(
                f"{other.folder}: task {task!r} scored other items than {ref.folder}; pairing needs the same"
            )


def _rows(rows: list[dict[str, Any]]) -> dict[str, MetricRows]:
    return label_metrics([float(r["p_yes"]) for r in rows], [int(r["gold"] == "Yes") for r in rows])


def _seconds(model: Evaluated, task: str) -> float | None:
    entry = next(t for t in model.report["tasks"] if t["name"] == task)
    return (entry.get("seconds") or {}).get(model.label)


def _iv(i: Interval) -> dict[str, float | None]:
    clean = lambda x: None if math.isnan(x) else round(x, 6)  # noqa: E731  (JSON has no NaN)
    return {"value": clean(i.value), "ci95_low": clean(i.low), "ci95_high": clean(i.high)}


def combine(models: list[Evaluated]) -> dict[str, Any]:
    """The table's numbers: per task and model AUC and accuracy [95% CI], each arm's paired AUC − base."""
    refs = [m for m in models if m.label == REFERENCE]
    if len(refs) != 1:
        raise EvalError(f"the study needs exactly one {REFERENCE!r} report, found {len(refs)}")
    ref = refs[0]
    arms = sorted((m for m in models if m is not ref), key=lambda m: (m.run.get("samples") or 0, m.label))
    for arm in arms:
        _same_items(ref, arm)
    seed, resamples = int(ref.report["seed"]), int(ref.report["bootstrap"])
    tasks = []
    for k, (task, ref_rows) in enumerate(ref.predictions.items()):
        idx = resample_indices(len(ref_rows), resamples, seed + k)  # as eval.report draws them for task k
        base = _rows(ref_rows)
        scores: dict[str, dict[str, Any]] = {}
        for model in (ref, *arms):
            rows = _rows(model.predictions[task])
            scores[model.label] = {mt: _iv(bootstrap(r, idx)) for mt, r in rows.items()}
            if model is not ref:
                scores[model.label]["auc_minus_base"] = _iv(paired_bootstrap(base["auc"], rows["auc"], idx))
            scores[model.label]["eval_s"] = _seconds(model, task)
        tasks.append({"name": task, "n": len(ref_rows), "scores": scores})
    return {
        "seed": seed,
        "bootstrap": resamples,
        "limit": ref.report.get("limit"),
        "models": [{"label": m.label, "folder": str(m.folder), **m.run} for m in (ref, *arms)],
        "tasks": tasks,
    }


def _ci(e: dict[str, Any], signed: bool = False) -> str:
    if e["value"] is None:
        return "n/a"
    f = "{:+.3f}" if signed else "{:.3f}"
    bounds = "" if e["ci95_low"] is None else f" [{f.format(e['ci95_low'])}, {f.format(e['ci95_high'])}]"
    return f.format(e["value"]) + bounds


def markdown(table: dict[str, Any]) -> str:
    lines = [
        "| task | model | n | AUC [95% CI] | AUC − base [paired 95% CI] | accuracy (P(Yes) > 0.5) | eval s |",
        "|---|---|---:|---|---|---|---:|",
    ]
    for t in table["tasks"]:
        for label, s in t["scores"].items():
            diff = _ci(s["auc_minus_base"], signed=True) if "auc_minus_base" in s else "—"
            secs = "n/a" if s.get("eval_s") is None else f"{s['eval_s']:.0f}"
            acc = f"{s['accuracy']['value']:.3f}"
            lines.append(f"| {t['name']} | {label} | {t['n']} | {_ci(s['auc'])} | {diff} | {acc} | {secs} |")
    lines += [
        "",
        "| arm | training samples | steps | train s | tokens/s | final train loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    num = lambda x, f: "n/a" if x is None else f.format(x)  # noqa: E731
    for mdl in table["models"][1:]:
        lines.append(
            f"| {mdl['label']} | {num(mdl.get('samples'), '{}')} | {num(mdl.get('steps'), '{}')} | "
            f"{num(mdl.get('train_s'), '{:.0f}')} | {num(mdl.get('tokens_per_s'), '{:.1f}')} | "
            f"{num(mdl.get('train_loss'), '{:.4f}')} |"
        )
    note = f"seed {table['seed']}, {table['bootstrap']} paired bootstrap resamples"
    return "\n".join([*lines, "", note + (f", eval.limit {table['limit']}" if table["limit"] else "")]) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tuneforge.bench.tallrec_table OUT   (OUT/eval/<model>/ from bench/tallrec_study.sh)")
        return 2
    out = Path(args[0])
    folders = sorted(p for p in (out / "eval").glob("*") if p.is_dir() and not p.name.endswith(".partial"))
    try:
        if not folders:
            raise EvalError(f"{out / 'eval'} holds no report folders")
        table = combine([read_evaluated(f) for f in folders])
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = markdown(table)
    (out / "tallrec.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    (out / "tallrec.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Evaluated", "combine", "main", "markdown", "read_evaluated"]
