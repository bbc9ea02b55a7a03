"""The local backend: each point in its own process (`python -m tuneforge.sweep.worker`), one after another
(or sweep.max_concurrent at once), so a point that crashes is a failed row and its peak RSS is its own."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tuneforge.sweep.folder import SweepFolder, point_state, reusable
from tuneforge.sweep.plan import Plan, Point

log = logging.getLogger("tuneforge.sweep")

Done = Callable[[Point, dict[str, Any]], None]
STARTING = {
    "new": "training",
    "done": "scoring (trained before)",
    "resume": "resuming from its last checkpoint",
    "restart": "restarting (half-finished, no checkpoint)",
}


def run_local(plan: Plan, folder: SweepFolder, done: Done) -> None:
    total = len(plan.points)

    def one(item: tuple[int, Point]) -> None:
        i, point = item
        record = folder.read_record(point.name)
        if reusable(plan, point, record, folder.run(point.name)):
            assert record is not None
            done(point, {**record, "how": "read back"})
            return
        log.info("sweep %d/%d %s: %s", i, total, point.name, _starting(folder, point))
        done(point, run_worker(plan, folder, point))

    workers = plan.settings.max_concurrent or 1
    items = list(enumerate(plan.points, start=1))
    if workers == 1:
        for item in items:
            one(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, items))  # list(): re-raise what a thread raised


def _starting(folder: SweepFolder, point: Point) -> str:
    return STARTING[point_state(folder.run(point.name))]


def run_worker(plan: Plan, folder: SweepFolder, point: Point) -> dict[str, Any]:
    """The point in a child process; its record (status ok, or failed with the error and where its log is)."""
    record_path = folder.record_path(point.name)
    spec = {"name": point.name, "config": point.config, "scored": plan.scored(point), "record": str(record_path)}
    spec_path = folder.specs / f"{point.name}.json"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    record_path.unlink(missing_ok=True)  # what the record says afterwards is this attempt's
    log_path = folder.logs / f"{point.name}.log"
    cmd = [sys.executable, "-m", "tuneforge.sweep.worker", str(spec_path)]
    started = time.perf_counter()
    timeout = plan.settings.timeout_s
    with log_path.open("a", encoding="utf-8") as logf:
        try:
            code: int | str = subprocess.run(
                cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout, env=os.environ
            ).returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {timeout:.0f} s (sweep.timeout_s)"
    record = folder.read_record(point.name) or {}
    if code != 0 and record.get("status") != "failed":
        where = log_path.relative_to(folder.root) if log_path.is_relative_to(folder.root) else log_path
        reason = code if isinstance(code, str) else f"worker exit {code}"
        record = {"status": "failed", "error": f"{reason}; see {where}", "name": point.name}
    record.setdefault("wall_s", round(time.perf_counter() - started, 1))
    return record
