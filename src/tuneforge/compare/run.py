"""run_compare: plan and check every arm, choose the prompts, train the trained arms' runs (tuneforge.sweep's
local worker: one process and one ordinary run folder each, resumable), answer the held-out task with every arm
(compare.worker: one process each), score and write the table after every step; with compare.forgetting, the
forgetting report of the trained runs last (tuneforge.compare.forgetting, in this process).

A rerun reads back what is finished: a run with result.json is not trained again, an arm whose answers were
given with the same prompts by the same model is not answered again; a folder holding another comparison is
refused. Deleting an arm's answers/<arm>.json (or its run's result.json) makes that one run again. The forgetting
report is read back when its runs and general config are the same (forgetting/inputs.json), else made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.compare.context import build_contexts
from tuneforge.compare.forgetting import FOLDER, add_columns, pending, run_forgetting
from tuneforge.compare.plan import Arm, ComparePlan, compare_out, identity, plan_compare
from tuneforge.compare.report import arm_row, finish_rows, write_outputs
from tuneforge.compare.source import CompareError
from tuneforge.config import RunConfig
from tuneforge.config.diff import config_diff
from tuneforge.sweep.folder import SweepFolder, read_record, reusable
from tuneforge.sweep.local import run_worker
from tuneforge.utils.progress import progress_bar

log = logging.getLogger("tuneforge.compare")

SUMMARY = "compare.json"
ANSWERS = "answers"
# What a comparison writes into its folder; a folder holding anything else is not one.
OWN_ENTRIES = frozenset(
    {SUMMARY, "compare.md", "compare.csv", "compare.png", ANSWERS, "data", "prompts", "fewshot", "index"}
    | {"runs", "points", "specs", "logs", FOLDER}
)


@dataclass
class CompareOutcome:
    plan: ComparePlan
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        forgetting = self.summary.get("forgetting") or {}
        return all(r["status"] == "ok" for r in self.summary["rows"]) and forgetting.get("status") != "failed"


def check_folder(out: Path, ident: dict[str, Any]) -> None:
    """A new or empty folder, or one this same comparison wrote (its compare.json's identity equal)."""
    if out.exists() and not out.is_dir():
        raise CompareError(f"compare output {out} is a file, not a folder; choose another compare.out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    summary = out / SUMMARY
    if not summary.is_file():
        stray = sorted(p.name for p in out.iterdir() if p.name not in OWN_ENTRIES)
        if stray:
            raise CompareError(f"{out} exists and is not a compare folder ({stray[0]}); choose another compare.out")
        return
    try:
        saved = json.loads(summary.read_text(encoding="utf-8")).get("identity")
    except json.JSONDecodeError as e:
        raise CompareError(f"{summary}: not valid JSON ({e}); delete it or choose another compare.out") from e
    diff = config_diff(saved, ident)
    if diff:
        raise CompareError(
            f"{out} holds another comparison: its config differs from this one at {', '.join(diff[:8])}"
            f"{' …' if len(diff) > 8 else ''}; choose another compare.out, or delete the folder to start over "
            "(adding or removing arms is allowed)"
        )


def run_compare(cfg: RunConfig) -> CompareOutcome:
    """Every arm of cfg.compare.arms on the held-out task; <out>/compare.{md,csv,json,png} and runs/."""
    check_folder(compare_out(cfg), identity(cfg))  # before the source writes anything there
    plan = plan_compare(cfg)  # every bad arm named before anything trains
    folder = SweepFolder(plan.out)
    for sub in (folder.runs, folder.points, folder.specs, folder.logs, plan.out / ANSWERS):
        sub.mkdir(parents=True, exist_ok=True)
    log.info(
        "compare %s: %d arms, %d runs to train, folder %s",
        cfg.name,
        len(plan.arms),
        len(plan.training.points),
        plan.out,
    )
    trained: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, Any]] = {}
    summary = _write(plan, trained, answers)
    prompts = build_contexts(plan)
    points = plan.training.points
    with progress_bar(len(points), "compare: training", unit="run") as bar:
        for i, point in enumerate(points, start=1):
            record = folder.read_record(point.name)
            if reusable(plan.training, point, record, folder.run(point.name)):
                assert record is not None
                trained[point.name] = {**record, "how": "read back"}
            else:
                log.info(
                    "compare train %d/%d %s: training (log: %s)",
                    i,
                    len(points),
                    point.name,
                    folder.logs / f"{point.name}.log",
                )
                trained[point.name] = run_worker(plan.training, folder, point)
            r = trained[point.name]
            log.info(
                "compare train %d/%d %s: %s (%s, %s s)%s",
                i,
                len(points),
                point.name,
                r["status"],
                r.get("how", "-"),
                r.get("wall_s"),
                f": {r['error']}" if r.get("error") else "",
            )
            summary = _write(plan, trained, answers)
            bar.update(1)
    with progress_bar(len(plan.arms), "compare: answering", unit="arm") as bar:
        for i, arm in enumerate(plan.arms, start=1):
            if arm.run is not None and trained[arm.run].get("status") != "ok":
                answers[arm.label] = {"status": "failed", "error": f"its run {arm.run} failed"}
            else:
                answers[arm.label] = _answer(plan, folder, arm, prompts.get(arm.context))
            summary = _write(plan, trained, answers)
            row = next(r for r in summary["rows"] if r["arm"] == arm.label)
            shown = f" {row['metric']}={row['score']:.4g}" if row["score"] is not None else ""
            cost = f", {row['answer_s_per_1k']:.4g} answer s/1k" if row["answer_s_per_1k"] is not None else ""
            error = f": {row['error']}" if row["error"] else ""
            how = answers[arm.label].get("how", "answered")
            log.info(
                "compare %d/%d %s: %s%s (%s%s)%s", i, len(plan.arms), arm.label, row["status"], shown, how, cost, error
            )
            bar.update(1)
    if plan.general is not None:  # after every arm is scored: the table stands whatever the report does
        summary = _write(plan, trained, answers, run_forgetting(plan, trained))
    return CompareOutcome(plan, summary)


def _fingerprint(plan: ComparePlan, arm: Arm, prompts: Path | None) -> str:
    """What an arm's answers depend on beyond the folder's identity: its prompts and its trained run's result."""
    run = plan.out / "runs" / arm.run / "result.json" if arm.run else None
    parts = {
        "prompts": prompts.read_text(encoding="utf-8") if prompts else None,
        "run": run.read_text(encoding="utf-8") if run is not None and run.is_file() else None,
        "items": [i.example.id for i in plan.source.task.items],
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _answer(plan: ComparePlan, folder: SweepFolder, arm: Arm, prompts: Path | None) -> dict[str, Any]:
    """The arm's answers: read back when the same, else answered in a child process (compare.worker)."""
    record_path = plan.out / ANSWERS / f"{arm.label}.json"
    fingerprint = _fingerprint(plan, arm, prompts)
    old = read_record(record_path)
    if old.get("status") == "ok" and old.get("fingerprint") == fingerprint:
        return {**old, "how": "read back"}
    spec = {
        "config": plan.cfg.model_dump(mode="json", exclude_unset=True),
        "out": str(plan.out),
        "arm": arm.label,
        "prompts": str(prompts) if prompts else None,
        "run": str(folder.runs / arm.run) if arm.run else None,
        "fingerprint": fingerprint,
        "record": str(record_path),
    }
    spec_path = folder.specs / f"answer-{arm.label}.json"
    spec_path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    record_path.unlink(missing_ok=True)
    log_path = folder.logs / f"answer-{arm.label}.log"
    timeout = plan.cfg.compare.timeout_s
    started = time.perf_counter()
    with log_path.open("a", encoding="utf-8") as logf:
        try:
            cmd = [sys.executable, "-m", "tuneforge.compare.worker", str(spec_path)]
            code: int | str = subprocess.run(
                cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout, env=os.environ
            ).returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {timeout:.0f} s (compare.timeout_s)"
    record = read_record(record_path)
    if code != 0 and record.get("status") != "failed":
        reason = code if isinstance(code, str) else f"worker exit {code}"
        record = {"status": "failed", "error": f"{reason}; see {log_path}"}
    elif record.get("status") == "failed":
        record["error"] = f"{record.get('error')}; see {log_path}"
    record.setdefault("wall_s", round(time.perf_counter() - started, 1))
    return record


def _write(
    plan: ComparePlan, trained: dict[str, Any], answers: dict[str, Any], forgetting: dict[str, Any] | None = None
) -> dict[str, Any]:
    import torch

    from tuneforge.utils.cpu import cpu_name

    rows = [arm_row(plan, a, trained.get(a.run) if a.run else None, answers.get(a.label)) for a in plan.arms]
    ok = {a.label: answers[a.label] for a in plan.arms if answers.get(a.label, {}).get("status") == "ok"}
    picked = finish_rows(plan, rows, ok)
    if plan.general is not None:
        forgetting = forgetting or pending(plan)
        add_columns(plan, rows, picked, forgetting)
    cfg, task = plan.cfg, plan.source.task
    settings = {
        "name": cfg.name,
        "source": cfg.compare.source,
        "about": plan.source.about,
        "model": cfg.model.path,
        "metric": task.task.primary,
        "items": len(task.items),
        "bootstrap": cfg.eval.bootstrap,
        "seed": cfg.eval.seed,
        "batch_size": cfg.eval.batch_size,
        "threads": cfg.train.threads or torch.get_num_threads(),
        "cpu": cpu_name(),
        "out": str(plan.out),
    }
    summary = {"settings": settings, "identity": identity(cfg), **picked, "chance": plan.source.chance}
    summary["retrieval"] = _retrieval(plan)
    if plan.general is not None:
        summary["forgetting"] = forgetting
    summary["rows"] = rows
    write_outputs(plan.out, summary)
    return summary


def _retrieval(plan: ComparePlan) -> dict[str, float]:
    """recall@k, MRR, context precision/recall of the RAG passages, where the source knows the gold chunks."""
    from tuneforge.rag.metrics import retrieval_metrics

    path = plan.out / "prompts" / "rag.json"
    gold = plan.source.gold_chunks
    if not gold or not path.is_file():
        return {}
    chosen = json.loads(path.read_text(encoding="utf-8"))["items"]
    pairs = [
        (c["chunks"], set(gold[i.example.id]))
        for i, c in zip(plan.source.task.items, chosen, strict=True)
        if i.example.id in gold
    ]
    metrics = retrieval_metrics(pairs, (1, plan.cfg.rag.top_k)) if pairs else {}
    return {k: round(v, 4) for k, v in metrics.items()}


__all__ = ["CompareOutcome", "check_folder", "run_compare"]
