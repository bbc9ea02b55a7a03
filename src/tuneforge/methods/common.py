"""Pieces shared by the method families: the error type, params coercion, target-module checks and the one
helper that wraps a model with a PEFT config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator

from tuneforge.config import MethodSection
from tuneforge.errors import TuneforgeError

if TYPE_CHECKING:
    from peft import PeftConfig
    from transformers import PreTrainedModel

P = TypeVar("P", bound=MethodSection)

# Decoder-layer modules named by `target_modules: all-linear` in peft and in tuneforge's own adapters.
ALL_LINEAR: Final = "all-linear"


class MethodError(TuneforgeError, ValueError):
    """A method that cannot be applied to this model; the message names the setting and what is available."""


def coerce(params: MethodSection, cls: type[P]) -> P:
    """`params` as the method's own params model.

    `config.load` without a method table leaves a bare MethodSection (only `name`), and callers may build
    params by hand; validating here means an apply function always sees checked, fully defaulted fields.
    """
    if isinstance(params, cls):
        return params
    raw = {**params.model_dump(), **(params.model_extra or {})}
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise MethodError(f"invalid method parameters for {raw.get('name')!r}: {e}") from None


def short_names(names: list[str]) -> str:
    """A sorted, de-duplicated, comma-separated list for error messages."""
    return ", ".join(sorted(set(names)))


def split_targets(v: Any) -> Any:
    """`target_modules` given as 'q_proj,v_proj' or LLaMA-Factory's 'all' becomes a list or 'all-linear'."""
    if v == "all":
        return ALL_LINEAR
    if isinstance(v, str) and v != ALL_LINEAR:
        return [part.strip() for part in v.split(",") if part.strip()]
    return v


class TargetedParams(MethodSection):
    """Params of a PEFT tuner that wraps chosen linear layers (`target_modules`)."""

    target_modules: Literal["all-linear"] | list[str] = Field(
        ALL_LINEAR,
        description="Module names that get the tuner, e.g. [q_proj, v_proj] (or 'q_proj,v_proj'); "
        "all-linear: every linear layer except the output head.",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return split_targets(v)

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules is empty; give module names or all-linear")
        return v


def suffix_match(names: list[str], target: str) -> bool:
    # PEFT's own rule for a list of target names: the full name, or its dotted suffix.
    return any(name == target or name.endswith("." + target) for name in names)


def check_targets(model: PreTrainedModel, targets: Any, key: str = "method.target_modules") -> None:
    """Fail with the model's linear-module names when a listed target does not exist."""
    from torch import nn

    if not isinstance(targets, list):
        return
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in targets if not suffix_match(names, t)]
    if missing:
        linear = [name.split(".")[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise MethodError(
            f"{key}: {', '.join(map(repr, missing))} not found in this model; "
            f"linear modules: {short_names(linear)} (or all-linear)"
        )


def names_with_weights(model: PreTrainedModel) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def check_saved_modules(model: PreTrainedModel, wanted: list[str]) -> None:
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in wanted if not suffix_match(names, t)]
    if missing:
        holders = [n.split(".")[-1] for n, m in names_with_weights(model)]
        raise MethodError(
            f"method.modules_to_save: {', '.join(map(repr, missing))} not found in this model; "
            f"modules with weights: {short_names(holders)}"
        )


def match_task(model: PreTrainedModel, config: PeftConfig) -> PeftConfig:
    """A reward model (stage rm: *ForSequenceClassification) needs peft's SEQ_CLS wrapper, not the causal-LM one
    (which expects generation methods); peft then also trains and saves the new `score` head."""
    if type(model).__name__.endswith("ForSequenceClassification"):
        config.task_type = "SEQ_CLS"
    return config


def wrap_peft(model: PreTrainedModel, config: PeftConfig, name: str) -> PreTrainedModel:
    """`get_peft_model`, with peft's shape and compatibility errors re-raised as MethodError naming the method."""
    from peft import get_peft_model

    match_task(model, config)
    try:
        return get_peft_model(model, config)  # type: ignore[return-value]
    except (ValueError, TypeError) as e:
        raise MethodError(f"method {name}: {e}") from e
