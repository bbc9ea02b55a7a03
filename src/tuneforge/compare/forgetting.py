"""`compare.forgetting`: the forgetting report (tuneforge.eval.forgetting) of the trained arms' runs, shown per arm.

    compare:
      forgetting: examples/forgetting.yaml      # an eval config of general benchmarks, no model: section

The config is checked before anything trains (`load_general`, `check_bases`). After every arm is scored,
`run_forgetting` makes one forgetting report over the runs of the trained arms that finished (arms sharing a run
share its numbers), in `<out>/forgetting/`; the arms on the base model (zero_shot, few_shot, rag) are the base,
their change 0 by construction. `add_columns` puts each general task's run - base, its paired 95% interval and
the verdict into the arms' rows and names what the recommended arm forgot in the recommendation.

evaluate keeps no cache, so the report's own inputs are written beside it (`inputs.json`: the general config,
the base, each run's result.json): a rerun with the same inputs reads forgetting.json back, any change (another
trained run, a retrained one, an edited general config) evaluates the base and every run again.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.compare.source import CompareError
from tuneforge.config import ModelConfig, RunConfig
from tuneforge.errors import TuneforgeError

if TYPE_CHECKING:
    from tuneforge.compare.plan import ComparePlan

log = logging.getLogger("tuneforge.compare")

FOLDER = "forgetting"  # under the compare folder
INPUTS = "inputs.json"  # what the report there was made from
BASE = "base"  # the verdict of an arm on the base model
KEY = "compare.forgetting"


def columns(task: str) -> tuple[str, str, str, str]:
    """A general task's columns in the rows and compare.csv: run - base, its interval, the verdict."""
    c = f"general_{task}"
    return c, f"{c}_low", f"{c}_high", f"{c}_verdict"


def load_general(cfg: RunConfig) -> RunConfig | None:
    """compare.forgetting's eval config, its tasks read (nothing loads a model); None when it is not set."""
    from tuneforge.eval.forgetting import SHARED_DATA_HINT, check_config
    from tuneforge.eval.run import load_tasks
    from tuneforge.stages import load_config

    given = cfg.compare.forgetting
    if given is None:
        return None
    path, where = Path(given).expanduser(), f"{KEY}={given!r}"
    if not path.is_file():
        why = "is a folder, not an eval config file" if path.is_dir() else "does not exist"
        raise CompareError(f"{where}: {path} {why}; give an eval config of general benchmarks, e.g. {KEY}: "
                           "examples/forgetting.yaml")  # fmt: skip
    try:
        general = load_config(path, [])
    except TuneforgeError as e:
        raise CompareError(f"{where}: {path} is not a valid config: {e}") from e
    if "model" in general.model_fields_set:
        raise CompareError(
            f"{where}: {path} has a model: section ({general.model.path!r}); the forgetting report evaluates the "
            "comparison's base model (model.*) and its trained arms' runs: remove the model: section"
        )
    try:
        check_config(general, cfg.model, "general", SHARED_DATA_HINT)
        load_tasks(general)  # a task whose data does not read fails now, not after every arm
    except TuneforgeError as e:
        raise CompareError(f"{where}: {e}") from e
    return general


def check_general_contrasts(cfg: RunConfig, general: RunConfig, runs: list[str]) -> None:
    """The general config's eval.contrasts name the report's models: base and the trained arms' runs (by run
    name, e.g. lora); checked with the arms, before anything trains."""
    from tuneforge.eval.run import check_contrasts

    try:
        check_contrasts(general.eval.contrasts, ["base", *runs])
    except TuneforgeError as e:
        raise CompareError(f"{KEY}={cfg.compare.forgetting!r}: {e}") from e


def check_bases(cfg: RunConfig, bases: dict[str, ModelConfig]) -> None:
    """One base per forgetting report: a trained arm's run whose model.* overrides make another base is refused."""
    from tuneforge.eval.forgetting import base_key

    other = [run for run, m in bases.items() if base_key(m) != base_key(cfg.model)]
    if cfg.compare.forgetting is not None and other:
        raise CompareError(
            f"{KEY} is set, but the run {other[0]} trains from model.path={bases[other[0]].path!r}, not the "
            f"comparison's model.path={cfg.model.path!r}: a forgetting report has one base; drop the arm's model.* "
            f"overrides or {KEY}"
        )


def _inputs(plan: ComparePlan, runs: list[str]) -> dict[str, Any]:
    assert plan.general is not None
    results = {r: (plan.out / "runs" / r / "result.json").read_text(encoding="utf-8") for r in runs}
    return {
        "general": plan.general.model_dump(mode="json"),
        "base": plan.cfg.model.model_dump(mode="json"),
        "runs": results,
    }


def pending(plan: ComparePlan) -> dict[str, Any]:
    """compare.json's `forgetting` before the report: its config, folder and general tasks."""
    folder = plan.out / FOLDER
    return {
        "status": "pending",
        "config": plan.cfg.compare.forgetting,
        "folder": str(folder),
        "general_tasks": task_names(plan),
    }


def run_forgetting(plan: ComparePlan, trained: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The forgetting report of the finished runs, evaluated or read back: what compare.json's `forgetting` holds."""
    from tuneforge.eval.forgetting import forgetting_report

    assert plan.general is not None
    state = pending(plan)
    folder = plan.out / FOLDER
    runs = [p.name for p in plan.training.points if trained.get(p.name, {}).get("status") == "ok"]
    if not runs:
        return {**state, "status": "skipped", "why": "no trained arm finished: every arm answered is the base"}
    inputs, saved = _inputs(plan, runs), folder / INPUTS
    if saved.is_file() and (folder / "forgetting.json").is_file() and json.loads(saved.read_text()) == inputs:
        data = json.loads((folder / "forgetting.json").read_text(encoding="utf-8"))
        log.info("compare forgetting: read back %s (same runs and general config)", folder / "forgetting.json")
        return {**state, **_state(data), "how": "read back"}
    saved.unlink(missing_ok=True)  # a report cut short is never read back as this one
    log.info(
        "compare forgetting: the base and %d runs (%s) on %s", len(runs), ", ".join(runs), plan.cfg.compare.forgetting
    )
    logfile = plan.out / "logs" / "forgetting.log"
    try:
        with _threads(plan.cfg.train.threads):
            report = forgetting_report(plan.general, [plan.out / "runs" / r for r in runs], output_dir=folder)
    except Exception as e:  # the arms' table stands; the failure is the report's row, as a failed arm's
        logfile.parent.mkdir(parents=True, exist_ok=True)
        logfile.write_text(traceback.format_exc(), encoding="utf-8")
        log.error("compare forgetting failed: %s (see %s)", e, logfile)
        return {**state, "status": "failed", "error": f"{type(e).__name__}: {e}; see {logfile}"}
    saved.write_text(json.dumps(inputs, indent=1) + "\n", encoding="utf-8")
    return {**state, **_state(report.data), "how": "evaluated"}


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's threads set to train.threads for the report (as compare.worker does for an arm), then restored."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _state(data: dict[str, Any]) -> dict[str, Any]:
    """forgetting.json's numbers by run folder name (the compare run) and task."""
    names = {r["label"]: Path(r["path"]).name for r in data["runs"]}
    tasks: dict[str, dict[str, Any]] = {}
    changes: dict[str, dict[str, Any]] = {}
    for c in data["general"]:
        tasks.setdefault(c["task"], {k: c[k] for k in ("metric", "higher_is_better", "n", "base")})
        keep = ("after", "diff", "low", "high", "verdict")
        changes.setdefault(names[c["run"]], {})[c["task"]] = {k: c[k] for k in keep}
    settings = {k: data.get(k) for k in ("seed", "limit", "bootstrap")}
    return {"status": "ok", **settings, "tasks": tasks, "changes": changes}


def task_names(plan: ComparePlan) -> list[str]:
    from tuneforge.eval.run import task_name

    return [task_name(t) for t in plan.general.eval.tasks] if plan.general is not None else []


def add_columns(plan: ComparePlan, rows: list[dict[str, Any]], picked: dict[str, Any], state: dict[str, Any]) -> None:
    """Each general task's columns in every row (base, pending, or the run's numbers), and what the recommended
    arm forgot after the recommendation."""
    runs = {a.label: a.run for a in plan.arms}
    for r in rows:
        run = runs.get(r["arm"])
        for task in task_names(plan):
            diff, low, high, verdict = columns(task)
            got = state.get("changes", {}).get(run, {}).get(task, {}) if run else {}
            shown: str | None
            if run is None:
                shown = BASE
            elif got:
                shown = got["verdict"]
            else:
                shown = state["status"] if state["status"] in ("pending", "failed") and r["status"] == "ok" else None
            r.update({diff: got.get("diff"), low: got.get("low"), high: got.get("high"), verdict: shown})
    pick = next((r for r in rows if r.get("recommended")), None)
    if pick is not None and state["status"] == "ok":
        picked["recommendation"] += " " + note(pick, runs.get(pick["arm"]) is not None, task_names(plan))


def _diff(r: dict[str, Any], task: str) -> str:
    diff, low, high, _ = columns(task)
    ci = "" if r[low] is None else f" [{r[low]:+.3f}, {r[high]:+.3f}]"
    return f"{r[diff]:+.3f}{ci}"


def note(row: dict[str, Any], trained: bool, tasks: list[str]) -> str:
    """What the recommended arm's general benchmarks say, for the recommendation's text."""
    arm = row["arm"]
    if not trained:
        return f"{arm} answers with the base model: nothing forgotten on the general benchmarks."
    forgot = [t for t in tasks if row[columns(t)[3]] == "forgot"]
    if forgot:
        which = ", ".join(f"{t} ({_diff(row, t)})" for t in forgot)
        return f"{arm} is recommended; it forgot on {which}: run - base on the general benchmarks, paired 95% interval."
    done = [t for t in tasks if row[columns(t)[0]] is not None]
    return f"{arm} forgot nothing measurable on the general benchmarks ({', '.join(done) or 'none measured'})."


__all__ = [
    "BASE",
    "FOLDER",
    "INPUTS",
    "add_columns",
    "check_bases",
    "check_general_contrasts",
    "columns",
    "load_general",
    "note",
    "pending",
    "run_forgetting",
    "task_names",
]
