"""The sweep's plan: the grid expanded to points, each named and validated as a run before anything trains.

A point is the sweep's config with the point's values set, its own `name` (`<name>-r8-lr1e-4`) and its run
folder under `<out>/runs/`. Every bad grid key and every bad point is named in one error, up front.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tuneforge.config import ConfigError, RunConfig, SweepConfig, is_set
from tuneforge.errors import TuneforgeError
from tuneforge.utils.names import did_you_mean

LOSSES = ("eval_loss", "train_loss")
# Keys the sweep sets per point itself: a grid over one of them would be overwritten or meaningless.
OWN_KEYS = {
    "name": "every point is named after its values",
    "output.dir": "every point's run folder is <out>/runs/<point>",
    "output.overwrite": "a point is never replaced; a half-finished one restarts only without a checkpoint",
    "train.resume": "a half-finished point resumes from its last checkpoint by itself",
}


class SweepError(TuneforgeError, ValueError):
    """A sweep that cannot run as given: a grid key, a point, the metric or the output folder."""


@dataclass(frozen=True)
class Point:
    name: str
    values: dict[str, Any]  # grid key -> this point's value
    config: dict[str, Any]  # the validated run config of the point (JSON), what its worker loads


@dataclass(frozen=True)
class Plan:
    base: RunConfig
    settings: SweepConfig
    grid: dict[str, list[Any]]
    points: list[Point]
    metric: str  # eval_loss, train_loss, <task> or <task>:<metric>
    mode: str | None  # None: from the eval task's own direction, once a point is scored
    out: Path
    identity: dict[str, Any]  # what makes two sweeps the same (the base config but the grid keys and output)

    @property
    def keys(self) -> list[str]:
        return list(self.grid)

    def scored(self, point: Point) -> bool:
        return self.settings.evaluate and bool(point.config.get("eval", {}).get("tasks"))


def plan_sweep(cfg: RunConfig) -> Plan:
    """Expand, name and validate every point of `cfg.sweep.grid`; raise one SweepError naming every problem."""
    from tuneforge.stages import load_config

    s = cfg.sweep
    if not s.grid:
        raise SweepError("nothing to sweep: give --grid key=v1,v2 (or a sweep.grid section in the config)")
    refuse_own_keys(cfg)
    base = base_raw(cfg)
    check_keys(cfg, base)
    metric, mode = resolve_metric(cfg)
    out = Path(s.out) if s.out else Path(cfg.output.dir) / f"sweep-{cfg.name}"
    points, errors = [], []
    for values, name in zip(expand_grid(s.grid), point_names(cfg.name, s.grid), strict=True):
        overrides = [*value_overrides(values), f"name={name}", f"output.dir={json.dumps(str(out / 'runs'))}"]
        try:
            point_cfg = load_config(base, overrides)
        except TuneforgeError as e:
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            errors.append(f"point {name} ({shown}): {_unprefixed(str(e))}")
            continue
        dump = point_cfg.model_dump(mode="json", exclude_unset=True)  # what is set stays set (eval's checks)
        dump.pop("sweep", None)
        points.append(Point(name, values, dump))
    if errors:
        raise SweepError(
            f"{len(errors)} of {len(errors) + len(points)} sweep points are not valid runs:\n" + "\n".join(errors)
        )
    return Plan(cfg, s, dict(s.grid), points, metric, mode, out, identity(cfg, s.grid))


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the grid's key order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def value_overrides(values: dict[str, Any]) -> list[str]:
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def base_raw(cfg: RunConfig) -> dict[str, Any]:
    """The config every point starts from: what the file and overrides set, without `sweep:`. Unset keys stay
    unset: a grid over method.name gives each method its own defaults (as bench methods does), and checks of
    what a user set (an eval task's settings for its type) see what the user set."""
    raw = cfg.model_dump(mode="json", exclude_unset=True)
    raw.pop("sweep", None)
    return raw


def identity(cfg: RunConfig, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """The resolved config less what a sweep may change on a rerun: the output folder, resume, the grid keys'
    own values (each point sets them). Two sweeps with the same identity share their finished points."""
    ident = json.loads(json.dumps(cfg.model_dump(mode="json")))
    ident.pop("sweep", None)
    ident.pop("output", None)
    ident.get("train", {}).pop("resume", None)
    for key in grid:
        *path, leaf = key.split(".")
        node = ident
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return ident


def refuse_own_keys(cfg: RunConfig) -> None:
    for key in cfg.sweep.grid:
        if key in OWN_KEYS or key.split(".")[0] == "sweep":
            why = OWN_KEYS.get(key, "the sweep's own settings are not run settings")
            raise SweepError(f"grid key {key!r}: the sweep sets it itself ({why})")
    for key in ("output.overwrite", "train.resume"):
        if is_set(cfg, key) and _get(cfg, key):
            raise SweepError(f"{key}=true: {OWN_KEYS[key]}; to start a sweep over, delete its folder or pick --out")


def check_keys(cfg: RunConfig, base: dict[str, Any]) -> None:
    """Each grid key must be a config key; the config loader says which key was meant."""
    from tuneforge.stages import load_config

    per_method = "method.name" in cfg.sweep.grid  # method.* keys then depend on each point's method
    for key, values in cfg.sweep.grid.items():
        if (per_method and key.startswith("method.")) or _known(cfg, key.split(".")):
            continue
        detail = ""
        try:
            load_config(base, [f"{key}={json.dumps(values[0])}"])
        except ConfigError as e:
            lines = [ln.strip(" -") for ln in str(e).splitlines() if "unknown key" in ln or "not a section" in ln]
            detail = f": {lines[0]}" if lines else ""
        raise SweepError(f"grid key {key!r} is not a config key{detail or _top_level_hint(key)}")


def _known(node: Any, parts: list[str]) -> bool:
    for i, part in enumerate(parts):
        if isinstance(node, BaseModel):
            if part not in type(node).model_fields:
                return False
            node = getattr(node, part)
        elif isinstance(node, dict):
            return i == len(parts) - 1  # a free mapping (data.variables): any one key inside it
        else:
            return False
    return True


def _top_level_hint(key: str) -> str:
    return did_you_mean(key.split(".")[0], RunConfig.model_fields)


def _get(cfg: BaseModel, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _unprefixed(message: str) -> str:
    """The loader's message without its `<config>: invalid configuration` head (the point is named instead)."""
    lines = message.splitlines()
    if lines and lines[0].endswith("invalid configuration"):
        lines = lines[1:]
    return " ".join(ln.strip(" -") for ln in lines).removeprefix("<config>: ")


def resolve_metric(cfg: RunConfig) -> tuple[str, str | None]:
    """The metric and its direction; an eval score's direction (None) comes from its task when scored."""
    from tuneforge.eval.run import task_name

    s = cfg.sweep
    metric = s.metric or ("eval_loss" if cfg.data.val_size else "train_loss")
    if metric in LOSSES:
        if metric == "eval_loss" and not cfg.data.val_size:
            raise SweepError("sweep.metric=eval_loss needs a validation split: set data.val_size (or use train_loss)")
        return metric, s.mode or "min"
    tasks = [task_name(t) for t in cfg.eval.tasks]
    task = metric.partition(":")[0]
    if task not in tasks:
        allowed = [*LOSSES, *tasks]
        hint = did_you_mean(task, allowed)
        raise SweepError(
            f"sweep.metric={metric!r} is neither a loss nor an eval task of this config{hint}; "
            f"allowed: {', '.join(allowed)} (a task's other metric: task:metric)"
        )
    if not s.evaluate:
        raise SweepError(f"sweep.metric={metric!r} is an eval score, but sweep.evaluate=false scores no point")
    return metric, s.mode


# --- names -----------------------------------------------------------------------------------------------


def point_names(prefix: str, grid: dict[str, list[Any]]) -> list[str]:
    """`<prefix>-r8-lr1e-4` per point: readable, stable across reruns, unique (a short hash where two collide)."""
    labels = _labels(list(grid))
    combos = expand_grid(grid)
    names = ["-".join([prefix, *(_part(labels[k], v) for k, v in c.items())]) for c in combos]
    counts = {n: names.count(n) for n in names}
    for i, (name, combo) in enumerate(zip(names, combos, strict=True)):
        if counts[name] > 1:
            digest = hashlib.sha1(json.dumps(combo, sort_keys=True).encode()).hexdigest()[:6]
            names[i] = f"{name}-{digest}"
    return names


def _labels(keys: list[str]) -> dict[str, str]:
    """A key's label is its last segment (method.r -> r), its whole path where two keys share one."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (k.replace(".", "_") if last.count(l_) > 1 else l_) for k, l_ in zip(keys, last, strict=True)}


def _part(label: str, value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9_.\-]+", "_", format_value(value)).strip("_") or "x"
    if label == "name":  # method.name=dora -> dora
        return text
    return f"{label}{text}" if _numeric(value) else f"{label}_{text}"


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return "_".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}_{format_value(v)}" for k, v in value.items())
    return str(value)


def _number(v: float) -> str:
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    mantissa, _, exponent = f"{v:.12e}".partition("e")
    sci = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return min(repr(v), sci, key=len)  # 0.0001 -> 1e-4, 0.5 -> 0.5


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value))
        return True
    except ValueError:
        return False
