"""run_sweep: plan every point, open the sweep folder, run the points on the chosen backend, write the table."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.sweep.folder import SweepFolder, open_folder
from tuneforge.sweep.plan import Plan, Point, plan_sweep
from tuneforge.sweep.report import best_row, make_row, write_outputs

log = logging.getLogger("tuneforge.sweep")


@dataclass
class SweepOutcome:
    plan: Plan
    folder: SweepFolder
    rows: list[dict[str, Any]]

    @property
    def best(self) -> dict[str, Any] | None:
        return best_row(self.plan, self.rows)

    @property
    def ok(self) -> bool:
        return all(r["status"] == "ok" for r in self.rows)


def run_sweep(cfg: RunConfig) -> SweepOutcome:
    """Every point of `cfg.sweep.grid` trained (or read back), compared in <out>/sweep.{md,csv,json,png}."""
    plan = plan_sweep(cfg)  # every bad point named before anything trains
    folder = open_folder(plan)
    rows = {p.name: make_row(plan, p, None) for p in plan.points}
    lock = threading.Lock()
    counter = [0]

    def done(point: Point, record: dict[str, Any]) -> None:
        with lock:  # the local backend may finish points from several threads
            row = rows[point.name] = make_row(plan, point, record)
            counter[0] += 1
            write_outputs(plan, folder, list(rows.values()), "running")
            shown = f" {plan.metric}={row['metric']:.4g}" if isinstance(row["metric"], float) else ""
            wall = f", {row['wall_s']} s" if row["wall_s"] is not None else ""
            error = f": {row['error']}" if row["error"] else ""
            log.info(
                "sweep %d/%d %s: %s%s (%s%s)%s",
                counter[0],
                len(rows),
                point.name,
                row["status"],
                shown,
                row["how"] or "-",
                wall,
                error,
            )

    log.info("sweep %s: %d points, backend %s, folder %s", cfg.name, len(plan.points), plan.settings.backend, plan.out)
    write_outputs(plan, folder, list(rows.values()), "running")
    if plan.settings.backend == "ray":
        from tuneforge.sweep.ray_tune import run_ray

        run_ray(plan, folder, done)
    else:
        from tuneforge.sweep.local import run_local

        run_local(plan, folder, done)
    outcome = SweepOutcome(plan, folder, list(rows.values()))
    write_outputs(plan, folder, outcome.rows, "finished")
    return outcome
