"""`tuneforge sweep`: one training run per point of a grid over any config keys, compared in one table.

    tuneforge sweep study.yaml --grid method.r=4,8 --grid train.lr=1e-4,3e-4

`plan.py` expands the grid (`sweep.grid`, the Cartesian product) into named points, each validated as a run
before anything trains; `folder.py` is the sweep folder (and what a rerun finds there: finished points are read
back, half-finished ones resume); `worker.py` trains and scores one point; `local.py` runs each point in its own
process, `ray_tune.py` as Ray Tune trials with ASHA early stopping; `report.py` writes sweep.md, .csv, .json and
.png. See docs/sweep.md.
"""

from tuneforge.sweep.plan import Plan, Point, SweepError, expand_grid, plan_sweep, point_names
from tuneforge.sweep.run import SweepOutcome, run_sweep

__all__ = ["Plan", "Point", "SweepError", "SweepOutcome", "expand_grid", "plan_sweep", "point_names", "run_sweep"]
