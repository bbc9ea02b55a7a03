"""Full fine-tuning with a memory-lean optimiser that projects the gradients of linear layers to low rank:
GaLore (SVD projections refreshed every update_proj_gap steps) and APOLLO (random projections, per-channel
learning-rate scaling). Both come from transformers' own `optim` options (galore_torch / apollo_torch),
built here so that their settings are validated method params; both run on CPU.

Every weight trains and the output is a full model, as with `full`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from tuneforge.config import MethodSection
from tuneforge.methods.common import ALL_LINEAR, MethodError, coerce, split_targets
from tuneforge.methods.full import decoder_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class LowRankOptimParams(MethodSection):
    target_modules: Literal["all-linear"] | list[str] = Field(
        ALL_LINEAR,
        description="Linear layers whose gradients are projected: all-linear (every linear layer of the "
        "decoder layers) or name fragments, e.g. [self_attn, mlp]; the rest use plain AdamW.",
    )
    rank: int = Field(128, gt=0, description="Rank of the gradient projection.")
    update_proj_gap: int = Field(200, gt=0, description="Recompute the projection every N steps.")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return split_targets(v)


class GaloreParams(LowRankOptimParams):
    name: Literal["galore"] = "galore"
    scale: float = Field(0.25, gt=0, description="Scale of the projected update (GaLore's alpha).")
    proj_type: Literal["std", "reverse_std", "left", "right", "full"] = Field(
        "std", description="Which side of each gradient is projected."
    )
    optimizer: Literal["adamw", "adafactor", "adamw_8bit"] = Field(
        "adamw", description="The optimiser run in the projected space (adamw_8bit needs bitsandbytes)."
    )


class ApolloParams(LowRankOptimParams):
    name: Literal["apollo"] = "apollo"
    scale: float = Field(1.0, gt=0, description="Scale of the update (APOLLO-Mini uses rank 1, scale 128).")
    proj: Literal["random", "svd"] = Field("random", description="Projection: random (APOLLO) or SVD.")
    scale_type: Literal["channel", "tensor"] = Field(
        "channel", description="Learning-rate scaling per channel, or one per tensor (APOLLO-Mini)."
    )


def _targets(model: PreTrainedModel, wanted: Literal["all-linear"] | list[str]) -> list[str]:
    if wanted != ALL_LINEAR:
        return list(wanted)
    from torch import nn

    prefix, _ = decoder_layers(model)
    return [n for n, m in model.named_modules() if n.startswith(prefix + ".") and isinstance(m, nn.Linear)]


def _low_rank_optimizer(model: Any, args: Any, optim: str, optim_args: dict[str, Any], targets: list[str]) -> Any:
    """transformers' optimiser for `optim`, from a copy of the run's TrainingArguments (lr, betas, eps)."""
    from transformers import Trainer
    from transformers.training_args import OptimizerNames

    low = copy.copy(args)
    low.optim = OptimizerNames(optim)
    low.optim_target_modules = targets
    low.optim_args = ",".join(f"{k}={v}" for k, v in optim_args.items())
    try:
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(low, model)
    except ImportError as e:
        raise MethodError(f"method {optim.split('_')[0]}: {e} (pip install 'tuneforge[lowrank]')") from e
    except ValueError as e:
        raise MethodError(f"method {optim.split('_')[0]}: {e}") from e
    groups = kwargs.pop("params")
    return optimizer_cls(groups, **kwargs)


def galore_optimizer(model: Any, params: MethodSection, args: Any) -> Any:
    p = coerce(params, GaloreParams)
    settings = {"rank": p.rank, "update_proj_gap": p.update_proj_gap, "scale": p.scale, "proj_type": p.proj_type}
    return _low_rank_optimizer(model, args, f"galore_{p.optimizer}", settings, _targets(model, p.target_modules))


def apollo_optimizer(model: Any, params: MethodSection, args: Any) -> Any:
    p = coerce(params, ApolloParams)
    settings = {
        "rank": p.rank,
        "update_proj_gap": p.update_proj_gap,
        "scale": p.scale,
        "proj": p.proj,
        "scale_type": p.scale_type,
    }
    return _low_rank_optimizer(model, args, "apollo_adamw", settings, _targets(model, p.target_modules))


def apply_low_rank_optim(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    model.requires_grad_(True)
    return model
