"""Training stages: one file per stage, each `run(cfg) -> RunResult`."""

from __future__ import annotations

from collections.abc import Callable

from tuneforge.config import RunConfig
from tuneforge.stages import dpo, kto, pt, rm, sft
from tuneforge.stages.common import RunResult

STAGES: dict[str, Callable[..., RunResult]] = {
    "pt": pt.run,
    "sft": sft.run,
    "rm": rm.run,
    "dpo": dpo.run,
    "kto": kto.run,
}


def run_stage(cfg: RunConfig, **kwargs) -> RunResult:
    return STAGES[cfg.stage](cfg, **kwargs)
