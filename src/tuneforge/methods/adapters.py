"""Small multiplicative or normalisation adapters through PEFT: IA³ (learned scaling vectors on chosen
activations) and LN tuning (only the normalisation layers train, as copies PEFT can swap out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, field_validator, model_validator

from tuneforge.config import MethodSection
from tuneforge.methods.common import check_targets, coerce, split_targets, wrap_peft

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class Ia3Params(MethodSection):
    name: Literal["ia3"] = "ia3"
    target_modules: list[str] | None = Field(
        None,
        description="Linear layers whose activations are scaled (default: PEFT's choice for the architecture, "
        "for Llama-style models [k_proj, v_proj, down_proj]).",
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Those of target_modules whose input (not output) is scaled: the feed-forward outputs "
        "(default: PEFT's choice, down_proj for Llama-style models).",
    )

    @field_validator("target_modules", "feedforward_modules", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return split_targets(v)

    @model_validator(mode="after")
    def _subset(self) -> Self:
        if self.feedforward_modules is not None:
            if self.target_modules is None:
                raise ValueError("feedforward_modules needs target_modules to be given too")
            extra = set(self.feedforward_modules) - set(self.target_modules)
            if extra:
                raise ValueError(f"feedforward_modules {sorted(extra)} are not in target_modules")
        return self


def apply_ia3(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import IA3Config, TaskType

    p = coerce(params, Ia3Params)
    check_targets(model, p.target_modules)
    config = IA3Config(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        feedforward_modules=p.feedforward_modules,
    )
    return wrap_peft(model, config, p.name)


class LnTuningParams(MethodSection):
    name: Literal["ln_tuning"] = "ln_tuning"
    target_modules: list[str] | None = Field(
        None,
        description="Normalisation layers that train (default: PEFT's choice for the architecture, for "
        "Llama-style models [input_layernorm, post_attention_layernorm, norm]).",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return split_targets(v)


def apply_ln_tuning(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import LNTuningConfig, TaskType

    p = coerce(params, LnTuningParams)
    check_targets(model, p.target_modules)
    config = LNTuningConfig(task_type=TaskType.CAUSAL_LM, target_modules=p.target_modules)
    return wrap_peft(model, config, p.name)
