"""Training stages: one file per stage, each `run(cfg, callbacks=()) -> RunResult`; the STAGES table
(`table.py`) says what each stage is. Importing this package is cheap: a stage's file loads when it runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config import RunConfig, load
from tuneforge.stages.table import STAGES, StageSpec, stage_sections

if TYPE_CHECKING:
    from tuneforge.stages.common import RunResult


def load_config(source: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """A config file (or mapping; none: every default) with `key=value` overrides, checked against both tables.

    The one way a workflow or entry point loads a run config: the config layer cannot import the method and
    stage tables (they live above it), so they are handed in here, and no caller can forget one of them.
    """
    from tuneforge.methods import METHOD_PARAMS

    return load(source or {}, overrides, methods=METHOD_PARAMS, stages=STAGES)


def run_stage(cfg: RunConfig, **kwargs: Any) -> RunResult:
    """Train `cfg`'s stage; a run starting from an earlier one (model.adapter) is resolved first (continuation.py)."""
    from tuneforge.stages.continuation import resolve_start

    cfg = resolve_start(cfg)
    return STAGES[cfg.stage].run(cfg, **kwargs)


__all__ = ["STAGES", "StageSpec", "load_config", "run_stage", "stage_sections"]
