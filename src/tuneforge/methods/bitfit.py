"""BitFit (Ben Zaken et al.): only the bias terms train.

Llama-style models (SmolLM2 included) have no biases at all. Rather than refuse, tuneforge adds zero
biases to every linear layer of the attention and MLP blocks, and only where the model's config can declare
them (`attention_bias` and `mlp_bias`, as Llama's config has): the adapted model starts equal to the base,
and with both flags set, a merged model saved by `save_pretrained` reloads with its biases as a standard HF
model. A model with neither biases nor those config flags is refused with an error.

The trained biases are saved in tuneforge's adapter format (`tuneforge.methods.native`); loading repeats the
same additions on the base and then loads the biases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn

from tuneforge.config import MethodSection
from tuneforge.methods.common import MethodError, coerce
from tuneforge.methods.full import decoder_layers
from tuneforge.methods.native import mark_native

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Config flag -> the block of a decoder layer whose linear layers it gives a bias (Llama's convention).
BIAS_FLAGS = {"attention_bias": "self_attn", "mlp_bias": "mlp"}


class BitfitParams(MethodSection):
    name: Literal["bitfit"] = "bitfit"
    add_biases: bool = Field(
        True,
        description="For a model without biases (Llama-style), add zero biases to the attention and MLP "
        "linear layers and train those; false: refuse such models.",
    )


def _has_bias(model: nn.Module) -> bool:
    return any(name.rsplit(".", 1)[-1] == "bias" for name, _ in model.named_parameters())


def _add_zero_biases(model: PreTrainedModel) -> None:
    config = model.config
    missing = [flag for flag in BIAS_FLAGS if not hasattr(config, flag)]
    if missing:
        raise MethodError(
            f"method bitfit: model type {config.model_type!r} has no biases, and its config has no "
            f"{' / '.join(missing)} setting to declare added ones; use a model with biases or another method"
        )
    _, layers = decoder_layers(model)
    for layer in layers:
        for block_name in BIAS_FLAGS.values():
            for module in layer.get_submodule(block_name).modules():
                if isinstance(module, nn.Linear) and module.bias is None:
                    w = module.weight
                    module.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
    for flag in BIAS_FLAGS:
        setattr(config, flag, True)  # a saved merged model then reloads with these biases


def apply_bitfit(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    p = coerce(params, BitfitParams)
    if not _has_bias(model):
        if not p.add_biases:
            raise MethodError(
                "method bitfit: this model has no bias parameters and method.add_biases=false; "
                "set add_biases: true to train added zero biases"
            )
        _add_zero_biases(model)
    model.requires_grad_(False)
    for name, param in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "bias":
            param.requires_grad_(True)
    model.enable_input_require_grads()
    mark_native(model, p)
    return model
