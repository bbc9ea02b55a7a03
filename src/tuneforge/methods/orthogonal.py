"""Multiplicative and spectral tuners through PEFT, which change every weight of a layer with few parameters:
OFT (block-diagonal orthogonal rotation of the input space), BOFT (orthogonal matrices built from butterfly
factors), HRA (a chain of Householder reflections) and FourierFT (a few learned spectral coefficients of ΔW,
mapped to the weight by an inverse 2-D DFT). All merge into the base weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

from pydantic import Field, model_validator

from tuneforge.config import MethodSection
from tuneforge.methods.common import TargetedParams, check_targets, coerce, wrap_peft

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class OftParams(TargetedParams):
    name: Literal["oft"] = "oft"
    block_size: int = Field(
        32, gt=0, description="Size of each orthogonal block; every target's input width must divide by it."
    )
    coft: bool = Field(False, description="Constrained OFT: keep the rotation within eps of the identity.")
    eps: float = Field(6e-5, gt=0, description="The COFT constraint radius.")
    block_share: bool = Field(False, description="One block shared by all blocks of a layer.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Multiplicative dropout of whole blocks.")


def apply_oft(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import OFTConfig, TaskType

    p = coerce(params, OftParams)
    check_targets(model, p.target_modules)
    config = OFTConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        r=0,
        oft_block_size=p.block_size,
        coft=p.coft,
        eps=p.eps,
        block_share=p.block_share,
        module_dropout=p.dropout,
    )
    return wrap_peft(model, config, p.name)


class BoftParams(TargetedParams):
    name: Literal["boft"] = "boft"
    block_size: int = Field(4, gt=0, description="Size of each butterfly block; target input widths must divide by it.")
    n_butterfly_factor: int = Field(1, gt=0, description="Number of butterfly factors (1 is plain block-diagonal OFT).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Multiplicative dropout of whole blocks.")


def apply_boft(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import BOFTConfig, TaskType

    p = coerce(params, BoftParams)
    check_targets(model, p.target_modules)
    config = BOFTConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        boft_block_size=p.block_size,
        boft_block_num=0,
        boft_n_butterfly_factor=p.n_butterfly_factor,
        boft_dropout=p.dropout,
    )
    return wrap_peft(model, config, p.name)


class HraParams(TargetedParams):
    name: Literal["hra"] = "hra"
    r: int = Field(8, gt=0, description="Number of Householder reflections (even unless apply_gs).")
    apply_gs: bool = Field(False, description="Gram-Schmidt-orthogonalise the reflection vectors.")

    @model_validator(mode="after")
    def _even(self) -> Self:
        if self.r % 2 and not self.apply_gs:
            raise ValueError(f"r={self.r} must be even (PEFT initialises reflections in pairs) unless apply_gs")
        return self


def apply_hra(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import HRAConfig, TaskType

    p = coerce(params, HraParams)
    check_targets(model, p.target_modules)
    config = HRAConfig(task_type=TaskType.CAUSAL_LM, target_modules=p.target_modules, r=p.r, apply_GS=p.apply_gs)
    return wrap_peft(model, config, p.name)


class FourierFtParams(TargetedParams):
    name: Literal["fourierft"] = "fourierft"
    n_frequency: int = Field(
        1000, gt=0, description="Learned spectral coefficients per layer (at most in × out of each target)."
    )
    scaling: float = Field(150.0, gt=0, description="Scale of ΔW (like LoRA's alpha).")
    random_loc_seed: int = Field(777, description="Seed choosing the frequencies (saved with the adapter).")


def apply_fourierft(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import FourierFTConfig, TaskType

    p = coerce(params, FourierFtParams)
    check_targets(model, p.target_modules)
    config = FourierFTConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        n_frequency=p.n_frequency,
        scaling=p.scaling,
        random_loc_seed=p.random_loc_seed,
    )
    return wrap_peft(model, config, p.name)
