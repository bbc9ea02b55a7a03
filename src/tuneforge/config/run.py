"""RunConfig: every section together, and the checks that need the stage table or the chosen method.

The stage table lives in a higher layer (`tuneforge.stages.table.STAGES`), so the config reads it through
`StageTable`, handed to `load(..., stages=STAGES)` and on to these checks as pydantic's validation context. A
RunConfig built without it (`RunConfig()`, `load(raw)`) gets no stage checks: the name is not checked against
the table, nor which sections belong to which stage (callers that train pass the table, as they pass the method
table). Method x stage refusals live on each method's params model (`refused_stages`), so they are checked
whenever the method's params are resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import Field, SerializeAsAny

from tuneforge.config.compare_section import CompareConfig
from tuneforge.config.grpo_section import GrpoConfig, grpo_refusal
from tuneforge.config.privacy_section import PrivacyConfig, privacy_refusal
from tuneforge.config.sections import (
    DataConfig,
    DistributedConfig,
    MethodSection,
    ModelConfig,
    OutputConfig,
    Section,
    TrainConfig,
    sharding_refusal,
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
from tuneforge.config.sweep_section import SweepConfig
from tuneforge.config.workflow_sections import BenchConfig, LabConfig, PrepareConfig

Stage = str  # a name in the stage table (tuneforge.stages.table.STAGES)


class StageFacts(Protocol):
    """What the config reads of a stage table row (tuneforge.stages.table.StageSpec has these and more)."""

    @property
    def sections(self) -> tuple[str, ...]: ...  # config sections that apply to this stage only

    @property
    def scores_pairs(self) -> bool: ...  # whether the stage scores chosen/rejected pairs (data.test_datasets)


# stage name -> its row; supplied by tuneforge.stages (see the module docstring).
StageTable = Mapping[str, StageFacts]
# name -> params model (a MethodSection subclass); supplied by tuneforge.methods.
MethodTable = Mapping[str, type[MethodSection]]


@dataclass(frozen=True, kw_only=True)
class StageRefusal:
    """Why a method cannot train a stage and what to use instead; a params model lists them in `refused_stages`.

    `lifted_without_reference`: only the stage's frozen reference copy of the adapter is the problem, so a run
    that keeps none (dpo.loss orpo or simpo, REFERENCE_FREE_LOSSES) trains.
    """

    why: str
    lifted_without_reference: bool = False


def refused_stages(method: MethodSection | type[MethodSection]) -> Mapping[str, StageRefusal]:
    """stage -> refusal, from a params model's `refused_stages` (none on a bare MethodSection: no method table)."""
    return getattr(method, "refused_stages", {})


class RunConfig(Section):
    name: str = Field(
        "run", pattern=r"^[A-Za-z0-9_.\-]+$", description="Run name: the run folder is <output.dir>/<name>."
    )
    stage: Stage = Field("sft", description="Training stage: a row of the stage table (docs/stages.md).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: SerializeAsAny[MethodSection] = Field(default_factory=MethodSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    kto: KtoConfig = Field(default_factory=KtoConfig)
    rm: RmConfig = Field(default_factory=RmConfig)
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    rag: RagConfig = Field(default_factory=RagConfig)
    lab: LabConfig = Field(default_factory=LabConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    def model_post_init(self, context: Any) -> None:
        stages: StageTable | None = context.get("stages") if isinstance(context, dict) else None
        if stages is not None:
            self._check_stage_sections(stages)
        self._check_method()
        refusal = grpo_refusal(self.grpo, self.train, self.data) if self.stage == "grpo" else None
        if refusal:
            raise ValueError(refusal)
        refusal = privacy_refusal(self.privacy, self.method, self.train, self.data, self.model, self.distributed)
        if refusal:
            raise ValueError(f"privacy: {refusal}")
        if stages is not None:
            self._check_test_datasets(stages)

    def _check_stage_sections(self, stages: StageTable) -> None:
        owners: dict[str, list[str]] = {}
        for stage, row in stages.items():
            for section in row.sections:
                owners.setdefault(section, []).append(stage)
        for section, names in owners.items():
            value = getattr(self, section)
            if self.stage not in names and value != type(value)():  # defaults are harmless (round trips)
                which = " or ".join(repr(n) for n in names)
                raise ValueError(f"section `{section}` applies to stage {which}, but stage is {self.stage!r}")

    def _check_method(self) -> None:
        refusal = refused_stages(self.method).get(self.stage)
        if refusal and not (refusal.lifted_without_reference and self._reference_free):
            raise ValueError(f"method {self.method.name!r} cannot train stage {self.stage!r}: {refusal.why}")
        sharded = sharding_refusal(self.method.name, self.distributed.strategy)
        if sharded:
            raise ValueError(sharded)

    def _check_test_datasets(self, stages: StageTable) -> None:
        pairs = [name for name, row in stages.items() if row.scores_pairs]
        if self.data.test_datasets and self.stage not in pairs:
            raise ValueError(
                f"data.test_datasets holds held-out preference pairs for stages {', '.join(pairs)}; "
                f"stage {self.stage!r} does not score pairs (use data.val_size for its validation split)"
            )

    @property
    def _reference_free(self) -> bool:
        """True when the run keeps no frozen reference copy of the model: dpo with loss orpo or simpo, grpo with
        beta 0 (no KL term)."""
        if self.stage == "grpo":
            return self.grpo.beta == 0
        return self.stage == "dpo" and self.dpo.loss in REFERENCE_FREE_LOSSES

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
