"""The `sweep:` section: the grid of `tuneforge sweep` and how its points are run and compared (docs/sweep.md).

A study is one file: the run config every point starts from, plus `sweep: {grid: {method.r: [4, 8]}, ...}`.
The CLI flags are short forms of these keys: `--grid method.r=4,8` is `sweep.grid.method.r=4,8`, `--metric`
is `sweep.metric`, `--out` is `sweep.out` and so on. A grid key is any config key path; the section only
normalises the grid (nested mappings to dotted keys, `"4,8"` to a list) and checks each key has values;
whether a key exists, and whether every point is a valid run, `tuneforge.sweep` checks against the whole config.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import Field, field_validator

from tuneforge.config.sections import Section


def _values(key: str, v: Any) -> list[Any]:
    if isinstance(v, str):  # `--grid method.r=4,8` and `method.r: "4,8"`: comma-separated, each read as YAML
        return [yaml.safe_load(x.strip()) if x.strip() else x.strip() for x in v.split(",") if x.strip()]
    if isinstance(v, (list, tuple)):
        return list(v)
    raise ValueError(f"{key}: the values must be a list (or 'v1,v2'), got {v!r}")


def _flatten(grid: Any, prefix: str = "") -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise ValueError(f"the grid must map config keys to lists of values, got {grid!r}")
    out: dict[str, list[Any]] = {}
    for key, value in grid.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):  # `sweep.grid.method.r=4,8` nests {method: {r: ...}}: one key, method.r
            out.update(_flatten(value, path))
        else:
            out.pop(path, None)  # a later spelling of the same key wins (an override after the file)
            out[path] = _values(path, value)
    return out


class SweepConfig(Section):
    """`tuneforge sweep CONFIG --grid key=v1,v2 ...`: one training run per point of the grid, compared in a table.

    Every point is this config with the point's values set (and its own `name`, under `<out>/runs/`); the
    points are validated before anything trains. A point whose run folder has result.json is not run again.
    """

    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Config key -> values, e.g. {method.r: [4, 8], train.lr: [1e-4, 3e-4]}; the points are "
        "every combination (--grid method.r=4,8).",
    )
    metric: str | None = Field(
        None,
        description="What the points are compared on: eval_loss, train_loss, an eval task's name (its primary "
        "score) or task:metric (default: eval_loss with a validation split, else train_loss).",
    )
    mode: Literal["min", "max"] | None = Field(
        None, description="Whether a lower or higher metric is better (default: min for losses, the task's own way)."
    )
    out: str | None = Field(None, description="Sweep folder (default: <output.dir>/sweep-<name>).")
    backend: Literal["local", "ray"] = Field(
        "local", description="local: each point in its own process here; ray: Ray Tune with ASHA early stopping."
    )
    max_concurrent: int | None = Field(
        None, gt=0, description="Points trained at once (default: local 1, ray as many as the cluster fits)."
    )
    evaluate: bool = Field(True, description="Score each trained point with the config's eval.tasks (if any).")
    timeout_s: float | None = Field(None, gt=0, description="local: a point running longer fails (default: none).")
    asha_grace_period: int = Field(1, gt=0, description="ray: logged steps every trial trains before ASHA may stop it.")
    asha_reduction_factor: float = Field(2.0, gt=1, description="ray: ASHA keeps 1 in this many trials per rung.")
    cpus_per_trial: float = Field(1.0, gt=0, description="ray: CPUs reserved for each trial.")
    gpus_per_trial: float = Field(0.0, ge=0, description="ray: GPUs reserved for each trial.")
    ray_address: str | None = Field(None, description="ray: a running cluster's address (default: a local Ray).")

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, v: Any) -> Any:
        grid = _flatten(v or {})
        for key, values in grid.items():
            if not values:
                raise ValueError(f"{key} has no values (give at least one: --grid {key}=v1,v2)")
            seen: list[Any] = []
            for value in values:
                if value in seen:
                    raise ValueError(f"{key} lists {value!r} twice")
                seen.append(value)
        return grid
