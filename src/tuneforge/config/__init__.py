"""The run configuration: one YAML file, one shallow section per concern, validated before anything loads.

Every setting has one name, used alike as YAML key, config field, CLI override path (`train.lr=1e-4`)
and documentation entry. Sections forbid unknown keys; errors name the key, the value and what is allowed,
and suggest the nearest key for a typo.

Method parameters are validated by the params model of the chosen method. The method table lives in a
higher layer (`tuneforge.methods`), so the caller hands it to `load()` (see `MethodTable`).

Modules: `sections` (model, data, method, train, output), `stage_sections` (eval, dpo, kto, rm, vocab, rag),
`run` (RunConfig and the stage x method limits), `loading` (load, overrides, readable errors).
"""

from tuneforge.config.loading import apply_override, format_errors, load
from tuneforge.config.run import PREFERENCE_STAGES, STAGE_METHOD_LIMITS, MethodTable, RunConfig, Stage
from tuneforge.config.sections import (
    EMBEDDED_MODEL,
    ConfigError,
    DataConfig,
    DatasetSpec,
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
    GenerationMetric,
    KtoConfig,
    RagConfig,
    RmConfig,
    TaskFormat,
    TaskSpec,
    TaskType,
    VocabConfig,
)

__all__ = [
    "EMBEDDED_MODEL",
    "PREFERENCE_STAGES",
    "REFERENCE_FREE_LOSSES",
    "STAGE_METHOD_LIMITS",
    "ConfigError",
    "DataConfig",
    "DatasetSpec",
    "DpoConfig",
    "EvalConfig",
    "GenerationMetric",
    "KtoConfig",
    "MethodSection",
    "MethodTable",
    "ModelConfig",
    "OutputConfig",
    "RagConfig",
    "RmConfig",
    "RunConfig",
    "Section",
    "Stage",
    "TaskFormat",
    "TaskSpec",
    "TaskType",
    "TrainConfig",
    "VocabConfig",
    "apply_override",
    "format_errors",
    "load",
]
