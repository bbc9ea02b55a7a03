"""RunConfig: every section together, and the stage x method combinations refused at load."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SerializeAsAny

from tuneforge.config.sections import (
    DataConfig,
    MethodSection,
    ModelConfig,
    OutputConfig,
    Section,
    TrainConfig,
)
from tuneforge.config.stage_sections import (
    REFERENCE_FREE_LOSSES,
    DpoConfig,
    EvalConfig,
    KtoConfig,
    RagConfig,
    RmConfig,
    VocabConfig,
)

Stage = Literal["pt", "sft", "rm", "dpo", "kto"]
PREFERENCE_STAGES = ("rm", "dpo", "kto")  # the stages that score chosen/rejected pairs
_MPT = "multitask prompt tuning needs task_ids in every batch, which TRL's preference trainers do not pass"
_ADALORA = (
    "AdaLoRA trains exactly one adapter, but the reference of {stage} is a frozen second copy of the fresh "
    "adapter (TRL adds it), which AdaLoRA refuses"
)
# Method x stage combinations that cannot work, refused when the config loads: (method, stage) -> why, and
# what to use instead. Stage rm and vocabulary extension also refuse adapter methods without modules_to_save
# (they cannot save the new head / embedding rows) before anything loads: see stages/rm.py and stages/pt.py.
STAGE_METHOD_LIMITS: dict[tuple[str, str], str] = {
    ("mpt", "rm"): _MPT + "; use prompt_tuning or lora",
    ("mpt", "dpo"): _MPT + "; use prompt_tuning or lora",
    ("mpt", "kto"): _MPT + "; use prompt_tuning or lora",
    ("adalora", "dpo"): _ADALORA.format(stage="dpo") + "; use lora, or dpo.loss=orpo|simpo (no reference)",
    ("adalora", "kto"): _ADALORA.format(stage="kto") + "; use lora",
    ("qlora", "rm"): "QLoRA's loading leaves the new score head in bfloat16 while the hidden states reaching it are "
    "float32, so the head cannot run; use lora",
}
NEEDS_REFERENCE = {("adalora", "dpo")}  # limits lifted by dpo.loss orpo/simpo, which keep no reference adapter


class RunConfig(Section):
    name: str = Field(
        "run", pattern=r"^[A-Za-z0-9_.\-]+$", description="Run name: the run folder is <output.dir>/<name>."
    )
    stage: Stage = Field("sft", description="Training stage: pt, sft, rm, dpo or kto.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: SerializeAsAny[MethodSection] = Field(default_factory=MethodSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    kto: KtoConfig = Field(default_factory=KtoConfig)
    rm: RmConfig = Field(default_factory=RmConfig)
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    rag: RagConfig = Field(default_factory=RagConfig)

    def model_post_init(self, __context: Any) -> None:
        for section, stage in (("dpo", "dpo"), ("kto", "kto"), ("rm", "rm"), ("vocab", "pt")):
            value = getattr(self, section)
            if self.stage != stage and value != type(value)():  # defaults are harmless (round trips)
                raise ValueError(f"section `{section}` applies to stage {stage!r}, but stage is {self.stage!r}")
        why = STAGE_METHOD_LIMITS.get((self.method.name, self.stage))
        reference_free = self.stage == "dpo" and self.dpo.loss in REFERENCE_FREE_LOSSES
        if why and not (reference_free and (self.method.name, self.stage) in NEEDS_REFERENCE):
            raise ValueError(f"method {self.method.name!r} cannot train stage {self.stage!r}: {why}")
        if self.data.test_datasets and self.stage not in PREFERENCE_STAGES:
            raise ValueError(
                f"data.test_datasets holds held-out preference pairs for stages {', '.join(PREFERENCE_STAGES)}; "
                f"stage {self.stage!r} does not score pairs (use data.val_size for its validation split)"
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# name -> params model (a MethodSection subclass); supplied by tuneforge.methods.
MethodTable = Mapping[str, type[MethodSection]]
