"""The STAGES table: what a training stage is, in one row per stage.

A row says: the stage's name (the `stage:` key), a one-line summary, the config sections that apply to it only
(set for another stage, they are refused when the config loads), whether it scores chosen/rejected pairs
(only those stages take `data.test_datasets`), and where its runner is: `run(cfg, callbacks=()) -> RunResult`
in the stage's own file, `tuneforge/stages/<name>.py`.

The config reads the table by injection (`tuneforge.config.load(..., stages=STAGES)`, as it reads the method
table), the web UI derives its stage choices and per-stage sections from it, docs/config.md lists it, and
`run_stage` runs a row. Which methods cannot train a stage is said on the method (`refused_stages` on its params
model, see tuneforge.methods.table), not here.

Adding a stage: its file `stages/<name>.py` with `run(cfg, callbacks=())`, plus one row below (and, if it has
a section of its own, that section's model as a field of `RunConfig`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tuneforge.stages.common import RunResult


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    name: str  # the value of `stage:` and the stage's file, tuneforge/stages/<name>.py
    summary: str
    sections: tuple[str, ...] = ()  # config sections that apply to this stage only
    scores_pairs: bool = False  # scores chosen/rejected pairs: takes data.test_datasets (preference_eval.json)
    # what a sample of this stage is: chat (a conversation, loss on the answers), text (plain text), pairs
    # (chosen / rejected), kto (an answer tagged desirable or not), prompts (no answer: RL); `data preview` reads it
    data: Literal["chat", "text", "pairs", "kto", "prompts"] = "chat"

    @property
    def run(self) -> Callable[..., RunResult]:
        """The stage's `run(cfg, callbacks=())`. Imported on use, not with the table: a stage module pulls in
        torch, transformers and TRL (~8 s), which `tuneforge validate`, eval and the web UI's form never need."""
        return importlib.import_module(f"{__package__}.{self.name}").run


def _table(*rows: StageSpec) -> dict[str, StageSpec]:
    return {row.name: row for row in rows}


STAGES: dict[str, StageSpec] = _table(
    StageSpec(
        name="pt",
        summary="continued pre-training on plain text, packed into data.cutoff_len blocks (transformers Trainer)",
        sections=("vocab", "privacy"),
        data="text",
    ),
    StageSpec(
        name="sft",
        summary="supervised fine-tuning on chat data, loss on the answers (transformers Trainer)",
        sections=("privacy",),
    ),
    StageSpec(
        name="rm",
        summary="reward model: a one-score head trained on preference pairs (TRL RewardTrainer)",
        sections=("rm",),
        scores_pairs=True,
        data="pairs",
    ),
    StageSpec(
        name="dpo",
        summary="direct preference optimisation on pairs: DPO, IPO, hinge, robust, ORPO, SimPO (TRL)",
        sections=("dpo",),
        scores_pairs=True,
        data="pairs",
    ),
    StageSpec(
        name="kto",
        summary="Kahneman-Tversky optimisation on answers tagged desirable or not (TRL KTOTrainer)",
        sections=("kto",),
        scores_pairs=True,
        data="kto",
    ),
    StageSpec(
        name="grpo",
        summary="reinforcement fine-tuning: sampled answers scored by rewards, GRPO or RLOO (TRL); docs/rl.md",
        sections=("grpo",),
        data="prompts",
    ),
)


def stage_sections() -> dict[str, tuple[str, ...]]:
    """section -> the stages it applies to, for the sections that belong to stages (the web UI's per-stage boxes)."""
    out: dict[str, tuple[str, ...]] = {}
    for row in STAGES.values():
        for section in row.sections:
            out[section] = (*out.get(section, ()), row.name)
    return out
