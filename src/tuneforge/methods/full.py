"""Methods that train the model's own weights: `full` (all of them) and `freeze` (a chosen slice).

`freeze` is LLaMA-Factory's freeze tuning, with the same sign convention so its configs translate one to
one: `trainable_layers: 2` trains the last two decoder layers, `trainable_layers: -2` the first two. Both
methods save a full HF model folder, since the trained weights are the model's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from tuneforge.config import MethodSection
from tuneforge.methods.common import MethodError, coerce, short_names

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel

# Where decoder layers live, by architecture family; the first path that resolves to a ModuleList wins.
# Supporting a new family is one entry here.
LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2/3, Gemma, Phi-3, SmolLM
    "model.language_model.layers",  # multimodal wrappers (Gemma 3, Llava-style)
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, Falcon, BLOOM
    "gpt_neox.layers",  # GPT-NeoX, Pythia
)


class FullParams(MethodSection):
    name: Literal["full"] = "full"


class FreezeParams(MethodSection):
    name: Literal["freeze"] = "freeze"
    trainable_layers: int = Field(
        2,
        description="How many decoder layers train: N > 0 the last N, N < 0 the first |N|.",
    )
    trainable_modules: list[str] = Field(
        default_factory=lambda: ["all"],
        description="Sub-modules of those layers that train, e.g. [mlp] or [self_attn, mlp] or [q_proj]; "
        "[all] trains the whole layers.",
    )
    extra_modules: list[str] = Field(
        default_factory=list,
        description="Modules outside the decoder layers that also train, e.g. [embed_tokens, norm, lm_head] "
        "(with tied embeddings embed_tokens and lm_head are one tensor).",
    )

    @field_validator("trainable_layers")
    @classmethod
    def _not_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must not be 0: N > 0 trains the last N decoder layers, N < 0 the first |N|")
        return v

    @field_validator("trainable_modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one sub-module name, or [all]")
        if "all" in v and len(v) > 1:
            raise ValueError("'all' already trains every sub-module; give it alone")
        return v


def apply_full(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    coerce(params, FullParams)
    model.requires_grad_(True)
    return model


def decoder_layers(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """The dotted path and the ModuleList of the model's decoder layers."""
    from torch import nn

    for path in LAYER_PATHS:
        try:
            found = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, nn.ModuleList):
            return path, found
    model_type = getattr(model.config, "model_type", type(model).__name__)
    raise MethodError(
        f"method freeze: cannot find the decoder layers of model type {model_type!r} (looked for "
        f"{', '.join(LAYER_PATHS)}); add its layer path to LAYER_PATHS in tuneforge/methods/full.py"
    )


def matches(name: str, pattern: str) -> bool:
    """Whether dotted `pattern` occurs as whole segments of the module `name` ("mlp" ~ "mlp.up_proj")."""
    parts, want = name.split("."), pattern.split(".")
    return any(parts[i : i + len(want)] == want for i in range(len(parts) - len(want) + 1))


def apply_freeze(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    p = coerce(params, FreezeParams)
    prefix, layers = decoder_layers(model)
    n = len(layers)
    if abs(p.trainable_layers) > n:
        raise MethodError(
            f"method.trainable_layers={p.trainable_layers}: this model has only {n} decoder layers "
            f"(allowed: 1..{n} for the last layers, -1..-{n} for the first)"
        )
    chosen = range(n - p.trainable_layers, n) if p.trainable_layers > 0 else range(-p.trainable_layers)
    model.requires_grad_(False)
    for index in chosen:
        _unfreeze_inside(layers[index], p.trainable_modules)
    _unfreeze_outside(model, prefix, p.extra_modules)
    if not any(t.requires_grad for t in model.parameters()):
        raise MethodError("method freeze: the chosen modules hold no parameters, so nothing would train")
    return model


def _unfreeze_inside(layer: nn.Module, patterns: list[str]) -> None:
    if patterns == ["all"]:
        layer.requires_grad_(True)
        return
    named = [(name, module) for name, module in layer.named_modules() if name]
    for pattern in patterns:
        hits = [module for name, module in named if matches(name, pattern)]
        if not hits:
            raise MethodError(
                f"method.trainable_modules: {pattern!r} matches no sub-module of a decoder layer; "
                f"available: {short_names([name for name, _ in named])}"
            )
        for module in hits:
            module.requires_grad_(True)


def _unfreeze_outside(model: PreTrainedModel, layers_path: str, patterns: list[str]) -> None:
    def inside_layers(name: str) -> bool:
        return name == layers_path or name.startswith(layers_path + ".")

    named = [(name, module) for name, module in model.named_modules() if name and not inside_layers(name)]
    for pattern in patterns:
        hits = [(name, module) for name, module in named if matches(name, pattern)]
        if not hits:
            with_weights = [n for n, m in named if any(True for _ in m.parameters(recurse=False))]
            raise MethodError(
                f"method.extra_modules: {pattern!r} matches no module outside the decoder layers; "
                f"available: {short_names(with_weights)}"
            )
        for name, module in hits:
            # A hit such as "model" contains the decoder layers too; those stay as trainable_layers chose.
            for param_name, param in module.named_parameters(prefix=name):
                if not inside_layers(param_name):
                    param.requires_grad_(True)
