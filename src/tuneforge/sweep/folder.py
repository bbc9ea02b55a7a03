"""The sweep folder and what a rerun finds in it.

<out>/
  sweep.md  sweep.csv  sweep.json  sweep.png   the table, its rows, settings and the plot (rewritten per point)
  runs/<point>/     each point's ordinary run folder (tuneforge.runs owns its files)
  points/<point>.json   the point's record: its run's result, peak RSS, eval scores or its error
  specs/  logs/     what each local worker was given, and what it printed
  ray/              Ray Tune's experiment state (--backend ray), what Tuner.restore reads

A rerun reads the finished points back (result.json in their run folder), resumes a half-finished one from its
last checkpoint and restarts one that has none; a folder holding another sweep's runs is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.diff import config_diff
from tuneforge.runs import RunDir
from tuneforge.sweep.plan import Plan, Point, SweepError

SWEEP_JSON = "sweep.json"


@dataclass(frozen=True)
class SweepFolder:
    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def points(self) -> Path:
        return self.root / "points"

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def summary(self) -> Path:
        return self.root / SWEEP_JSON

    def run(self, name: str) -> RunDir:
        return RunDir(self.runs / name)

    def record_path(self, name: str) -> Path:
        return self.points / f"{name}.json"

    def read_record(self, name: str) -> dict[str, Any] | None:
        path = self.record_path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # a record cut off by a kill: the point is looked at again


def write_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    tmp.replace(path)  # never a half-written record


def read_record(path: Path) -> dict[str, Any]:
    """A worker's record, or {} when there is none yet (or it is unreadable: the work is redone)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def write_failure(spec: dict[str, Any], error: BaseException, key: str) -> dict[str, Any]:
    """The record of a worker whose work raised (`key`: the spec field naming the point or arm), written where its
    record goes, with the error, the traceback's end and the process's peak RSS so far."""
    import traceback

    from tuneforge.utils.memory import peak_rss_mb

    record = {
        key: spec.get(key),
        "status": "failed",
        "error": f"{type(error).__name__}: {error}".strip()[:500],
        "traceback": traceback.format_exc()[-4000:],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_record(Path(spec["record"]), record)
    return record


def spec_main(
    argv: list[str],
    work: Callable[[dict[str, Any]], Any],
    failure: Callable[[dict[str, Any], BaseException], Any],
) -> int:
    """The worker-process protocol shared by sweep points and compare arms: the spec file named by argv[0] in,
    `work(spec)` writes the record; any exception becomes the failed record (`failure`) and exit status 1, so the
    parent goes on with the next point or arm."""
    from tuneforge.utils.logs import offline_env, setup_logging

    offline_env()
    setup_logging(False)
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        work(spec)
    except Exception as e:
        failure(spec, e)
        return 1
    return 0


def open_folder(plan: Plan) -> SweepFolder:
    """The sweep folder, created or reopened; refused when it holds something that is not this sweep."""
    folder = SweepFolder(plan.out)
    root = folder.root
    if root.exists() and not root.is_dir():
        raise SweepError(f"sweep output {root} is a file, not a folder; choose another sweep.out (--out)")
    if root.is_dir() and any(root.iterdir()):
        if not folder.summary.is_file():
            raise SweepError(
                f"{root} exists and is not a tuneforge sweep folder (no {SWEEP_JSON}); choose another sweep.out (--out)"
            )
        try:
            saved = json.loads(folder.summary.read_text(encoding="utf-8")).get("identity")
        except json.JSONDecodeError as e:
            raise SweepError(f"{folder.summary}: not valid JSON ({e}); delete it or choose another --out") from e
        diff = sorted(config_diff(saved, plan.identity))
        if diff:
            raise SweepError(
                f"{root} holds another sweep's runs: its config differs from this one at {', '.join(diff[:8])}"
                f"{' …' if len(diff) > 8 else ''}; choose another sweep.out (--out), or delete the folder to "
                "start over"
            )
    for sub in (folder.runs, folder.points, folder.specs, folder.logs):
        sub.mkdir(parents=True, exist_ok=True)
    return folder


def point_state(run: RunDir) -> str:
    """new (no folder), done (result.json), resume (a checkpoint to go on from) or restart (neither)."""
    if not run.root.is_dir() or not any(run.root.iterdir()):
        return "new"
    if run.result.is_file():
        return "done"
    return "resume" if run.last_checkpoint() is not None else "restart"


# What each state asks of the point's run: a restart replaces the folder, which tuneforge.runs allows only
# for a tuneforge run folder.
STATE_OVERRIDES = {"new": [], "done": [], "resume": ["train.resume=true"], "restart": ["output.overwrite=true"]}
STATE_HOW = {"new": "trained", "done": "read back", "resume": "resumed", "restart": "restarted"}


def reusable(plan: Plan, point: Point, record: dict[str, Any] | None, run: RunDir) -> bool:
    """A finished point needs no process: its run has result.json and its record all the sweep asks for."""
    if record is None or record.get("status") != "ok" or point_state(run) != "done":
        return False
    return not plan.scored(point) or bool(record.get("scores"))
