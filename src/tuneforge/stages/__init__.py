"""Training stages: one file per stage, each `run(cfg, callbacks=()) -> RunResult`; the STAGES table
(`table.py`) says what each stage is. Importing this package is cheap: a stage's file loads when it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.config import RunConfig
from tuneforge.stages.table import STAGES, StageSpec, stage_sections

if TYPE_CHECKING:
    from tuneforge.stages.common import RunResult


def run_stage(cfg: RunConfig, **kwargs: Any) -> RunResult:
    return STAGES[cfg.stage].run(cfg, **kwargs)


__all__ = ["STAGES", "StageSpec", "run_stage", "stage_sections"]
