"""Relatives of LoRA through PEFT: AdaLoRA (SVD-shaped adapters whose ranks are re-allocated while training),
LoHa (Hadamard product of two low-rank pairs), LoKr (Kronecker product) and VeRA (one shared pair of frozen
random matrices, trainable scaling vectors per layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from tuneforge.config import MethodSection, StageRefusal
from tuneforge.methods.common import MethodError, TargetedParams, check_targets, coerce, wrap_peft

if TYPE_CHECKING:
    from transformers import PreTrainedModel, TrainerCallback


_ADALORA = (
    "AdaLoRA trains exactly one adapter, but the reference of {stage} is a frozen second copy of the fresh "
    "adapter (TRL adds it), which AdaLoRA refuses"
)


class AdaLoraParams(TargetedParams):
    refused_stages: ClassVar[dict[str, StageRefusal]] = {
        "dpo": StageRefusal(
            why=_ADALORA.format(stage="dpo") + "; use lora, or dpo.loss=orpo|simpo (no reference)",
            lifted_without_reference=True,
        ),
        "kto": StageRefusal(why=_ADALORA.format(stage="kto") + "; use lora"),
        "grpo": StageRefusal(
            why=_ADALORA.format(stage="grpo with grpo.beta > 0") + "; use lora, or grpo.beta=0 (no reference)",
            lifted_without_reference=True,
        ),
    }
    name: Literal["adalora"] = "adalora"
    init_r: int = Field(12, gt=0, description="Rank every adapter starts with.")
    target_r: int = Field(8, gt=0, description="Average rank kept once the budget is allocated.")
    alpha: int = Field(16, gt=0, description="Update scale (alpha / average rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout applied to the adapter's input.")
    tinit: int = Field(0, ge=0, description="Steps of warm-up before ranks start to shrink.")
    tfinal: int = Field(0, ge=0, description="Final steps trained with the ranks frozen.")
    delta_t: int = Field(1, gt=0, description="Re-allocate ranks every delta_t steps.")
    beta1: float = Field(0.85, gt=0, lt=1, description="EMA factor of the importance (sensitivity) scores.")
    beta2: float = Field(0.85, gt=0, lt=1, description="EMA factor of the importance uncertainty.")
    orth_reg_weight: float = Field(0.5, ge=0, description="Weight of the orthogonality penalty on P and Q.")
    total_step: int | None = Field(
        None, gt=0, description="Length of the rank schedule; default: the run's number of optimiser steps."
    )

    @model_validator(mode="after")
    def _schedule(self) -> Self:
        if self.target_r > self.init_r:
            raise ValueError(f"target_r={self.target_r} must not exceed init_r={self.init_r}")
        if self.total_step is not None and self.tinit >= self.total_step - self.tfinal:
            raise ValueError(
                f"tinit={self.tinit} + tfinal={self.tfinal} leave no budgeting phase in total_step={self.total_step}"
            )
        return self


def apply_adalora(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import AdaLoraConfig, TaskType

    p = coerce(params, AdaLoraParams)
    check_targets(model, p.target_modules)
    # Until the trainer tells the real length (see AdaLoraSchedule), a schedule just long enough to be valid.
    total = p.total_step or p.tinit + p.tfinal + 1
    config = AdaLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        init_r=p.init_r,
        target_r=p.target_r,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        tinit=p.tinit,
        tfinal=p.tfinal,
        deltaT=p.delta_t,
        beta1=p.beta1,
        beta2=p.beta2,
        orth_reg_weight=p.orth_reg_weight,
        total_step=total,
    )
    return wrap_peft(model, config, p.name)


def adalora_callbacks(model: Any, params: MethodSection) -> list[TrainerCallback]:
    """AdaLoRA's rank allocator must see every step's gradients: after the optimiser step, before they are
    zeroed (PEFT leaves the call to the training loop; Trainer's `on_optimizer_step` is that point)."""
    from transformers import TrainerCallback

    p = coerce(params, AdaLoraParams)

    class AdaLoraSchedule(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if p.total_step is not None:
                return
            total = state.max_steps
            if p.tinit >= total - p.tfinal:
                raise MethodError(
                    f"method adalora: tinit={p.tinit} + tfinal={p.tfinal} leave no budgeting phase in this "
                    f"run's {total} steps; lower them or train longer"
                )
            config = model.peft_config["default"]
            config.total_step = total
            model.base_model.rankallocator.set_total_step(total)

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model.base_model.update_and_allocate(state.global_step)

    return [AdaLoraSchedule()]


class LycorisBase(TargetedParams):
    """Settings shared by LoHa and LoKr (PEFT's LyCORIS tuners)."""

    r: int = Field(8, gt=0, description="Rank of each of the two low-rank pairs.")
    alpha: int = Field(8, gt=0, description="Update scale (alpha / r).")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout of whole ranks while training.")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Chance of skipping an adapter per step.")


class LohaParams(LycorisBase):
    name: Literal["loha"] = "loha"


class LokrParams(LycorisBase):
    name: Literal["lokr"] = "lokr"
    decompose_both: bool = Field(False, description="Also factor the left Kronecker factor into low rank.")
    decompose_factor: int = Field(
        -1, description="Size of the Kronecker factorisation (-1: as square as the layer allows)."
    )


def apply_loha(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import LoHaConfig, TaskType

    p = coerce(params, LohaParams)
    check_targets(model, p.target_modules)
    config = LoHaConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        r=p.r,
        alpha=p.alpha,
        rank_dropout=p.rank_dropout,
        module_dropout=p.module_dropout,
    )
    return wrap_peft(model, config, p.name)


def apply_lokr(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import LoKrConfig, TaskType

    p = coerce(params, LokrParams)
    check_targets(model, p.target_modules)
    config = LoKrConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        r=p.r,
        alpha=p.alpha,
        rank_dropout=p.rank_dropout,
        module_dropout=p.module_dropout,
        decompose_both=p.decompose_both,
        decompose_factor=p.decompose_factor,
    )
    return wrap_peft(model, config, p.name)


class VeraParams(TargetedParams):
    name: Literal["vera"] = "vera"
    r: int = Field(256, gt=0, description="Rank of the shared frozen random matrices.")
    d_initial: float = Field(0.1, gt=0, description="Initial value of the trainable d scaling vector.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout applied to the adapter's input.")
    projection_seed: int = Field(0, description="Seed of the shared random projections (saved with them).")


def apply_vera(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import TaskType, VeraConfig

    p = coerce(params, VeraParams)
    check_targets(model, p.target_modules)
    config = VeraConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=p.target_modules,
        r=p.r,
        d_initial=p.d_initial,
        vera_dropout=p.dropout,
        projection_prng_key=p.projection_seed,
        save_projection=True,  # the adapter folder then loads without regenerating the projections
    )
    return wrap_peft(model, config, p.name)
