"""The forgetting report: a run's base model and the run on general benchmarks, before and after, next to the
target task's gain (docs/eval.md, "Forgetting report").

    from tuneforge.eval.forgetting import forgetting_report
    report = forgetting_report(general_cfg, ["runs/a", "runs/b"])      # writes forgetting.md/.json/.png
    report.general[0].verdict                                          # "forgot", "no measurable change", ...

The scoring, the paired bootstrap and the report files of each evaluation are `tuneforge.eval.evaluate`'s: this
module checks the runs (finished, one base), evaluates that base and the runs on the general config's tasks (and
on a target config's, when given), and reads each task's primary-metric difference and its paired 95% interval out
of the eval report. Without a target config the target's gain comes from the runs' own eval reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import ModelConfig, RunConfig
from tuneforge.eval.readers import EvalError
from tuneforge.eval.report import EvalReport
from tuneforge.eval.run import evaluate, load_tasks, model_refs, task_name
from tuneforge.runs import RunDir, RunFolderError, model_config_of_run

FORGOT, SAME, IMPROVED, WORSE, NO_INTERVAL = "forgot", "no measurable change", "improved", "worse", "no interval"
SHARED_DATA_HINT = (
    "the shipped general benchmarks read the public evaluation data in ../shared/data (beside the project, "
    "relative to where tuneforge runs): run from the project root with it there, or point the task's path at "
    "your own copy (--general CONFIG)"
)


def verdict(low: float | None, high: float | None, higher_is_better: bool = True, worse: str = FORGOT) -> str:
    """What a paired 95% interval of run - base says: `worse` ("forgot") when it lies wholly on the bad side of 0,
    "improved" wholly on the good side, "no measurable change" when it holds 0 (lower-is-better metrics such as
    perplexity: the bad side is above 0)."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return NO_INTERVAL
    gain_low, gain_high = (low, high) if higher_is_better else (-high, -low)
    if gain_high < 0:
        return worse
    if gain_low > 0:
        return IMPROVED
    return SAME


@dataclass(frozen=True)
class TaskChange:
    """One task's primary metric for the base and one run: run - base with its paired 95% interval."""

    task: str
    run: str
    metric: str
    higher_is_better: bool
    n: int
    base: float | None
    after: float | None
    diff: float | None
    low: float | None
    high: float | None
    verdict: str
    source: str  # the eval report.json it was read from


@dataclass(frozen=True)
class RunRef:
    label: str  # the run's name in the eval reports
    path: str
    output: str  # its adapter/ or model/


@dataclass(frozen=True)
class ForgettingReport:
    base: ModelConfig
    runs: list[RunRef]
    general: list[TaskChange]
    target: list[TaskChange]
    general_report: EvalReport
    settings: dict[str, Any]  # seed, limit, bootstrap of the general evaluation
    folder: Path  # where forgetting.md/.json/.png and the general/ and target/ eval reports are

    def changes(self, run: str, role: str = "general") -> list[TaskChange]:
        return [c for c in (self.general if role == "general" else self.target) if c.run == run]

    @property
    def data(self) -> dict[str, Any]:
        """What forgetting.json holds."""
        base = {k: getattr(self.base, k) for k in ("path", "tokenizer", "adapter", "merge_adapter")}
        summary = {
            r.label: {v: sum(c.verdict == v for c in self.changes(r.label)) for v in (FORGOT, SAME, IMPROVED)}
            for r in self.runs
        }
        return {
            "base": base,
            "runs": [asdict(r) for r in self.runs],
            **self.settings,
            "general": [asdict(c) for c in self.general],
            "target": [asdict(c) for c in self.target],
            "summary": summary,
        }


def changes_from_report(
    data: dict[str, Any], source: str, labels: dict[str, str] | None = None, worse: str = FORGOT
) -> list[TaskChange]:
    """Each task's primary-metric comparison with an eval report's reference (report.json's `data`), as TaskChanges
    (`labels` renames the report's model labels to the forgetting report's, leaving the others out; `worse`: the
    verdict of a measurable loss, "forgot" for general tasks, "worse" for the target's)."""
    ref, out = data["reference"], []
    for t in data["tasks"]:
        p, hib = t["primary"], bool(t["higher_is_better"])
        for c in t["comparisons"]:
            if c["metric"] != p or c["reference"] != ref or (labels is not None and c["model"] not in labels):
                continue
            low, high = c["ci95_low"], c["ci95_high"]
            out.append(
                TaskChange(
                    task=t["name"],
                    run=labels[c["model"]] if labels is not None else c["model"],
                    metric=p,
                    higher_is_better=hib,
                    n=int(t["n"]),
                    base=t["scores"][ref][p]["value"],
                    after=t["scores"][c["model"]][p]["value"],
                    diff=c["value"],
                    low=low,
                    high=high,
                    verdict=verdict(low, high, hib, worse),
                    source=source,
                )
            )
    return out


# --- checks, before anything loads -------------------------------------------------------------------------------


def _where(p: str | None) -> str | None:
    return str(Path(p).expanduser().resolve()) if p and Path(p).expanduser().exists() else p


def base_key(m: ModelConfig) -> tuple[Any, ...]:
    """What makes two base models the same weights: the folder (resolved), tokenizer and any adapter under it."""
    return _where(m.path), _where(m.tokenizer), _where(m.adapter), m.merge_adapter


def _describe(m: ModelConfig) -> str:
    extra = f" + adapter {m.adapter}" + (" (merged)" if m.merge_adapter else "") if m.adapter else ""
    return f"model.path={m.path!r}{extra}"


def check_runs(runs: Sequence[str | Path]) -> tuple[ModelConfig, list[tuple[Path, Path]]]:
    """The one base of all `runs` and each run's (folder, trained output); a clear error for a folder that is not
    a finished run and for runs trained from different bases."""
    if not runs:
        raise EvalError("the forgetting report needs at least one run folder (tuneforge forgetting runs/NAME)")
    found: list[tuple[Path, Path, ModelConfig]] = []
    for run in dict.fromkeys(Path(r) for r in runs):
        if not RunDir(run).is_run():
            what = "does not exist" if not run.exists() else "has no config.yaml"
            raise RunFolderError(f"{run} is not a finished tuneforge run folder: it {what}")
        base, output = model_config_of_run(run)  # no adapter/ or model/ yet: an error naming the run
        found.append((run, output, base))
    first_run, _, first = found[0]
    for run, _, base in found[1:]:
        if base_key(base) != base_key(first):
            raise EvalError(
                f"one base model per forgetting report: {first_run} was trained from {_describe(first)}, {run} from "
                f"{_describe(base)}; make one report per base"
            )
    return first, [(run, output) for run, output, _ in found]


def check_config(cfg: RunConfig, base: ModelConfig, role: str, hint: str | None) -> None:
    """A general (or target) config `base` can be evaluated on: no model: section naming another model, tasks
    given, every task's file there (`hint`: what to say of a missing one)."""
    if "model" in cfg.model_fields_set and base_key(cfg.model) != base_key(base):
        raise EvalError(
            f"the {role} config {cfg.name!r} names {_describe(cfg.model)}, but the runs were trained from "
            f"{_describe(base)}: drop its model: section (the runs' base is evaluated) or make them match"
        )
    if not cfg.eval.tasks:
        raise EvalError(f"the {role} config {cfg.name!r} has no eval.tasks")
    for i, spec in enumerate(cfg.eval.tasks):
        if not Path(spec.path).expanduser().exists():
            why = f": {hint}" if hint else ""
            raise EvalError(
                f"{role} task eval.tasks[{i}] ({task_name(spec)}) of {cfg.name!r}: {spec.path} does not exist{why}"
            )


def _for_runs(cfg: RunConfig, base: ModelConfig, limit: int | None) -> RunConfig:
    """The config as the forgetting report evaluates it: the runs' base as model, the runs given on the call."""
    ev: dict[str, Any] = {"runs": [], "base": True, "output_dir": None, **({"limit": limit} if limit else {})}
    return cfg.model_copy(update={"model": base, "eval": cfg.eval.model_copy(update=ev)})


# --- the report ----------------------------------------------------------------------------------------------------


def _own_target(run: RunRef, base: ModelConfig, general: set[str]) -> list[TaskChange]:
    """The run's gain on its own eval reports (runs/<name>/eval/**/report.json) against the same base model."""
    if base.adapter is not None:
        return []  # the base is itself an adapter on model.path: a report's reference names model.path alone
    out = []
    for path in RunDir(Path(run.path)).eval_reports():
        data = json.loads(path.read_text(encoding="utf-8"))
        models = {m["label"]: m for m in data.get("models", [])}
        ref = models.get(data.get("reference", ""), {})
        if ref.get("adapter") is not None or _where(ref.get("model")) != _where(base.path):
            continue  # compared with another model (an earlier run), not with this base
        mine = [
            label
            for label, m in models.items()
            if m.get("adapter") and Path(m["adapter"]).expanduser().resolve() == Path(run.output).resolve()
        ]
        for label in mine:
            rows = changes_from_report(data, str(path), {label: run.label}, WORSE)
            out += [c for c in rows if c.task not in general]
    return out


def forgetting_report(
    general: RunConfig,
    runs: Sequence[str | Path],
    target: RunConfig | None = None,
    output_dir: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> ForgettingReport:
    """Evaluate the runs' base and each run on `general`'s tasks (and `target`'s), write forgetting.md/.json/.png
    to `output_dir` (default: <first run>/eval/forgetting), and return the report."""
    from tuneforge.eval.forgetting_render import write_forgetting

    if limit is not None and limit < 1:
        raise EvalError(f"limit={limit}: give a positive number of items per general task")
    base, found = check_runs(runs)
    dirs = [run for run, _ in found]
    check_config(general, base, "general", SHARED_DATA_HINT)
    model_refs(_for_runs(general, base, limit), dirs)  # bad eval.contrasts labels fail before any model loads
    if target is not None:
        check_config(target, base, "target", None)
        load_tasks(_for_runs(target, base, None))  # a bad target task fails now, not after the general benchmarks
        model_refs(_for_runs(target, base, None), dirs)
    out = Path(output_dir) if output_dir else RunDir(found[0][0]).forgetting
    report = evaluate(_for_runs(general, base, limit), runs=dirs, output_dir=out / "general", progress=progress)
    labels = [m["label"] for m in report.data["models"][1:]]  # evaluate's names for the runs, in the same order
    refs = [RunRef(label, str(run), str(output)) for label, (run, output) in zip(labels, found, strict=True)]
    changes = changes_from_report(report.data, str(out / "general" / "report.json"))
    if target is not None:
        done = evaluate(_for_runs(target, base, None), runs=dirs, output_dir=out / "target", progress=progress)
        gains = changes_from_report(done.data, str(out / "target" / "report.json"), worse=WORSE)
    else:
        names = {t["name"] for t in report.data["tasks"]}
        gains = [c for r in refs for c in _own_target(r, base, names)]
    settings = {k: report.data[k] for k in ("seed", "limit", "bootstrap")}
    result = ForgettingReport(base, refs, changes, gains, report, settings, out)
    write_forgetting(result, out)
    return result


__all__ = [
    "FORGOT",
    "IMPROVED",
    "NO_INTERVAL",
    "SAME",
    "SHARED_DATA_HINT",
    "WORSE",
    "ForgettingReport",
    "RunRef",
    "TaskChange",
    "base_key",
    "changes_from_report",
    "check_config",
    "check_runs",
    "forgetting_report",
    "verdict",
]
