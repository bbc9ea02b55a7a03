"""The run configuration: one YAML file, one shallow section per concern, validated before anything loads.

Every setting has one name, used alike as YAML key, config field, CLI override path (`train.lr=1e-4`)
and documentation entry. Sections forbid unknown keys; errors name the key, the value and what is allowed,
and suggest the nearest key for a typo.

Method parameters are validated by the params model of the chosen method; which stages exist, which sections
belong to which stage and which stages score preference pairs come from the stage table. Both tables live in
higher layers (`tuneforge.methods`, `tuneforge.stages.table`), so the caller hands them to `load()` (see
`MethodTable`, `StageTable`). A method lists the stages it cannot train on its params model
(`refused_stages`, of `StageRefusal`s), checked whenever its params are resolved.

Modules: `sections` (model, data, method, train, output), `stage_sections` (eval, dpo, kto, rm, vocab, rag),
`workflow_sections` (lab, bench, prepare: the verbs beside training, their presets), `sweep_section` (sweep),
`compare_section` (compare: the arms of `tuneforge compare`, ARM_KINDS),
`grpo_section` (grpo and its rewards), `privacy_section` (privacy: DP-SGD),
`run` (RunConfig and its stage checks), `loading` (load, overrides, readable errors).
"""

from tuneforge.config.compare_section import ARM_KINDS, ArmKind, ArmSpec, CompareConfig, arm_run_name
from tuneforge.config.grpo_section import REWARD_NAMES, REWARD_PARAMS, GrpoConfig, RewardSpec
from tuneforge.config.loading import apply_override, format_errors, load
from tuneforge.config.privacy_section import DP_STAGES, PrivacyConfig
from tuneforge.config.run import (
    MethodTable,
    RunConfig,
    Stage,
    StageFacts,
    StageRefusal,
    StageTable,
    refused_stages,
)
from tuneforge.config.sections import (
    EMBEDDED_MODEL,
    CanaryConfig,
    ConfigError,
    DataConfig,
    DatasetSpec,
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
    GenerationMetric,
    InputStyle,
    KtoConfig,
    RagConfig,
    RmConfig,
    TaskFormat,
    TaskSpec,
    TaskType,
    VocabConfig,
)
from tuneforge.config.sweep_section import SweepConfig
from tuneforge.config.workflow_sections import (
    BENCH_METHODS_PRESETS,
    BENCH_SPEED_PRESETS,
    LAB_PRESETS,
    OLD_FLAGS,
    BenchConfig,
    LabConfig,
    PrepareConfig,
    is_set,
    old_flag_overrides,
    preset_overrides,
    refuse_set,
)

__all__ = [
    "ARM_KINDS",
    "BENCH_METHODS_PRESETS",
    "BENCH_SPEED_PRESETS",
    "DP_STAGES",
    "EMBEDDED_MODEL",
    "LAB_PRESETS",
    "OLD_FLAGS",
    "REFERENCE_FREE_LOSSES",
    "REWARD_NAMES",
    "REWARD_PARAMS",
    "ArmKind",
    "ArmSpec",
    "BenchConfig",
    "CanaryConfig",
    "CompareConfig",
    "ConfigError",
    "DataConfig",
    "DatasetSpec",
    "DistributedConfig",
    "DpoConfig",
    "EvalConfig",
    "GenerationMetric",
    "GrpoConfig",
    "InputStyle",
    "KtoConfig",
    "LabConfig",
    "MethodSection",
    "MethodTable",
    "ModelConfig",
    "OutputConfig",
    "PrepareConfig",
    "PrivacyConfig",
    "RagConfig",
    "RewardSpec",
    "RmConfig",
    "RunConfig",
    "Section",
    "Stage",
    "StageFacts",
    "StageRefusal",
    "StageTable",
    "SweepConfig",
    "TaskFormat",
    "TaskSpec",
    "TaskType",
    "TrainConfig",
    "VocabConfig",
    "apply_override",
    "arm_run_name",
    "format_errors",
    "is_set",
    "load",
    "old_flag_overrides",
    "preset_overrides",
    "refuse_set",
    "refused_stages",
    "sharding_refusal",
]
