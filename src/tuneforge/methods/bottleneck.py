"""Bottleneck adapters as in LLM-Adapters (Hu et al., 2023), written natively.

AdapterHub's `adapters` does not support transformers 5, and PEFT has no bottleneck tuner; a custom PEFT tuner
cannot be registered either without editing PEFT's `PeftType` enum (its `register_peft_method` refuses names
outside it). So these are small modules attached to the decoder layers, trained and saved in tuneforge's
documented adapter format (`tuneforge.methods.native`).

An adapter is f(h) = s · up(act(down(dropout(h)))) with down: d→b and up: b→d. `up` starts at zero, so the
model is unchanged until training moves it. Placement, per decoder layer:

- series_adapter (Houlsby): after a block, on its output: y ← y + f(y). `attn` = after the attention block,
  `mlp` = after the MLP; Houlsby uses both (the default), AdapterP/Pfeiffer only `mlp`.
- parallel_adapter (He et al.): beside a block, from its input: y ← y + s · f'(x). `mlp` = beside the MLP
  (the default), `attn` = beside attention; the scaled parallel adapter uses s = 4.

The adapter joins through a forward hook on the block, so the base model's own modules and weight names are
untouched; the adapter's weights live under `<layer>.<method>_<place>`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from tuneforge.config import MethodSection
from tuneforge.methods.common import MethodError, coerce, short_names
from tuneforge.methods.full import decoder_layers
from tuneforge.methods.native import mark_native

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Place = Literal["attn", "mlp"]


class Bottleneck(nn.Module):
    """down → non-linearity → up, times a fixed or learned scale; zero at initialisation."""

    def __init__(
        self, width: int, size: int, non_linearity: str, dropout: float, scaling: float, learned: bool
    ) -> None:
        from transformers.activations import ACT2FN

        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.down = nn.Linear(width, size, bias=False)
        self.act = ACT2FN[non_linearity]
        self.up = nn.Linear(size, width, bias=False)
        nn.init.zeros_(self.up.weight)  # the adapted model starts equal to the base
        if learned:
            self.scaling = nn.Parameter(torch.tensor(float(scaling)))
        else:
            self.register_buffer("scaling", torch.tensor(float(scaling)), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(self.dropout(hidden.to(self.down.weight.dtype)))))
        return (out * self.scaling).to(hidden.dtype)


class BottleneckBase(MethodSection):
    bottleneck_size: int = Field(64, gt=0, description="Width b of the bottleneck (d → b → d).")
    non_linearity: Literal["tanh", "relu", "gelu", "silu"] = Field(
        "tanh", description="Activation between down- and up-projection (LLM-Adapters: tanh)."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    learned_scaling: bool = Field(False, description="Learn the scale s (starting at `scaling`).")
    attn_module: str = Field("self_attn", description="Name of the attention block inside a decoder layer.")
    mlp_module: str = Field("mlp", description="Name of the MLP block inside a decoder layer.")

    @field_validator("placement", mode="before", check_fields=False)
    @classmethod
    def _list(cls, v: Any) -> Any:
        return [part.strip() for part in v.split(",") if part.strip()] if isinstance(v, str) else v

    @field_validator("placement", check_fields=False)
    @classmethod
    def _placement(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("give attn, mlp or both, each once")
        return v


class SeriesAdapterParams(BottleneckBase):
    name: Literal["series_adapter"] = "series_adapter"
    placement: list[Place] = Field(
        default_factory=lambda: list[Place](["attn", "mlp"]),
        description="Blocks followed by an adapter: [attn, mlp] (Houlsby), [mlp] (Pfeiffer) or [attn].",
    )
    scaling: float = Field(1.0, gt=0, description="Scale s of the adapter output.")


class ParallelAdapterParams(BottleneckBase):
    name: Literal["parallel_adapter"] = "parallel_adapter"
    placement: list[Place] = Field(
        default_factory=lambda: list[Place](["mlp"]), description="Blocks with an adapter beside them: [mlp] or [attn]."
    )
    scaling: float = Field(4.0, gt=0, description="Scale s of the adapter output (scaled parallel: 4).")


def _with_delta(output: Any, delta: torch.Tensor) -> Any:
    # Attention blocks return (hidden_states, attention_weights, ...); MLP blocks a tensor.
    if isinstance(output, tuple):
        return (output[0] + delta, *output[1:])
    return output + delta


def _series_hook(adapter: Bottleneck) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        return _with_delta(output, adapter(hidden))

    return hook


def _parallel_hook(adapter: Bottleneck) -> Any:
    def hook(module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        hidden = args[0] if args else kwargs["hidden_states"]
        return _with_delta(output, adapter(hidden))

    return hook


def _block(layer: nn.Module, name: str, key: str) -> nn.Module:
    try:
        return layer.get_submodule(name)
    except AttributeError:
        children = [n for n, _ in layer.named_children()]
        raise MethodError(
            f"method.{key}={name!r}: no such block in a decoder layer; its blocks: {short_names(children)}"
        ) from None


def apply_bottleneck(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    """Attach an adapter per chosen block of every decoder layer; only the adapters train."""
    p: SeriesAdapterParams | ParallelAdapterParams
    if isinstance(params, SeriesAdapterParams | ParallelAdapterParams):
        p = params
    elif params.name == "parallel_adapter":
        p = coerce(params, ParallelAdapterParams)
    else:
        p = coerce(params, SeriesAdapterParams)
    series = isinstance(p, SeriesAdapterParams)
    width = model.config.hidden_size
    dtype = model.dtype
    model.requires_grad_(False)
    _, layers = decoder_layers(model)
    for layer in layers:
        for place in p.placement:
            block = _block(layer, p.attn_module if place == "attn" else p.mlp_module, f"{place}_module")
            adapter = Bottleneck(width, p.bottleneck_size, p.non_linearity, p.dropout, p.scaling, p.learned_scaling)
            layer.add_module(f"{p.name}_{place}", adapter.to(dtype))
            if series:
                block.register_forward_hook(_series_hook(adapter))
            else:
                block.register_forward_hook(_parallel_hook(adapter), with_kwargs=True)
    # With gradient checkpointing the adapters only get gradients if the checkpointed inputs require them.
    model.enable_input_require_grads()
    mark_native(model, p)
    return model
