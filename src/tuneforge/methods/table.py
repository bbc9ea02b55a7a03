"""The METHODS table: it maps a name to its params model, its apply function and its output.

Adding a method is one entry in METHODS plus its params model (a `MethodSection` subclass whose `name` is a
Literal of the method's name) and an `apply(model, params) -> model` that marks what trains. Everything else
(config validation, saving, reloading for chat, merging) follows from the entry. A method that needs more than
a prepared model declares it with an optional hook on its entry, which the training stage calls through the
helpers below:

- `load_kwargs(params) -> dict`: extra `from_pretrained` arguments (QLoRA's quantization_config), because
  some preparation must happen while the weights load → `model_load_kwargs(params)`.
- `optimizer(model, params, TrainingArguments) -> Optimizer`: an optimiser other than the trainer's default
  (LoRA+ learning-rate groups, GaLore / APOLLO) → `build_optimizer(...)`, None for every other method.
- `callbacks(model, params) -> [TrainerCallback]`: per-step work inside the training loop (AdaLoRA's rank
  allocation) → `method_callbacks(...)`.
- `after_load(model, params) -> model`: what a reloaded adapter needs beyond PEFT's own loading (MPT's default
  task), used by `load_trained`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.config import MethodSection
from tuneforge.methods.adapters import Ia3Params, LnTuningParams, apply_ia3, apply_ln_tuning
from tuneforge.methods.bitfit import BitfitParams, apply_bitfit
from tuneforge.methods.bottleneck import ParallelAdapterParams, SeriesAdapterParams, apply_bottleneck
from tuneforge.methods.common import MethodError, coerce
from tuneforge.methods.full import FreezeParams, FullParams, apply_freeze, apply_full
from tuneforge.methods.lora import (
    DoraParams,
    LoraParams,
    LoraPlusParams,
    OloraParams,
    PissaParams,
    RsLoraParams,
    apply_lora,
    loraplus_optimizer,
)
from tuneforge.methods.lora_variants import (
    AdaLoraParams,
    LohaParams,
    LokrParams,
    VeraParams,
    adalora_callbacks,
    apply_adalora,
    apply_loha,
    apply_lokr,
    apply_vera,
)
from tuneforge.methods.optim import ApolloParams, GaloreParams, apollo_optimizer, apply_low_rank_optim, galore_optimizer
from tuneforge.methods.orthogonal import (
    BoftParams,
    FourierFtParams,
    HraParams,
    OftParams,
    apply_boft,
    apply_fourierft,
    apply_hra,
    apply_oft,
)
from tuneforge.methods.prompt import (
    MptParams,
    PrefixTuningParams,
    PromptTuningParams,
    PTuningParams,
    PTuningV2Params,
    add_default_task,
    apply_mpt,
    apply_p_tuning,
    apply_prefix_tuning,
    apply_prompt_tuning,
)
from tuneforge.methods.qlora import (
    QloraParams,
    apply_qlora,
    keep_cpu_weights_trainable,
    qlora_load_kwargs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, TrainerCallback, TrainingArguments

Family = Literal["full", "lora", "prompt", "adapter", "other"]


@dataclass(frozen=True)
class Method:
    params: type[MethodSection]
    apply: Callable[[PreTrainedModel, MethodSection], PreTrainedModel]  # returns the model to train
    output: Literal["adapter", "model"]  # what save_trained writes: an adapter folder or a full HF model folder
    mergeable: bool  # whether `merge` can fold the trained weights into the base
    summary: str
    family: Family = "other"
    load_kwargs: Callable[[MethodSection], dict[str, Any]] | None = None
    optimizer: Callable[[Any, MethodSection, TrainingArguments], Any] | None = None
    callbacks: Callable[[Any, MethodSection], list[TrainerCallback]] | None = None
    after_load: Callable[[Any, MethodSection], Any] | None = None


def _mpt_after_load(model: Any, params: MethodSection) -> Any:
    add_default_task(model, coerce(params, MptParams).task_id)
    return model


METHODS: dict[str, Method] = {
    # full-weight training
    "full": Method(FullParams, apply_full, "model", False, "every weight trains", "full"),
    "freeze": Method(
        FreezeParams, apply_freeze, "model", False, "only chosen decoder layers (and extra modules) train", "full"
    ),
    "galore": Method(
        GaloreParams,
        apply_low_rank_optim,
        "model",
        False,
        "every weight trains; gradients of linear layers projected to low rank (GaLore)",
        "full",
        optimizer=galore_optimizer,
    ),
    "apollo": Method(
        ApolloParams,
        apply_low_rank_optim,
        "model",
        False,
        "every weight trains; AdamW-like update scaled from a random low-rank projection (APOLLO)",
        "full",
        optimizer=apollo_optimizer,
    ),
    # LoRA family
    "lora": Method(LoraParams, apply_lora, "adapter", True, "low-rank adapters (PEFT LoRA)", "lora"),
    "dora": Method(DoraParams, apply_lora, "adapter", True, "LoRA with magnitude/direction split", "lora"),
    "rslora": Method(RsLoraParams, apply_lora, "adapter", True, "LoRA scaled by alpha/sqrt(r)", "lora"),
    "pissa": Method(PissaParams, apply_lora, "adapter", True, "LoRA initialised from the principal SVD part", "lora"),
    "olora": Method(OloraParams, apply_lora, "adapter", True, "LoRA initialised by QR decomposition", "lora"),
    "lora_plus": Method(
        LoraPlusParams,
        apply_lora,
        "adapter",
        True,
        "LoRA with B learning faster than A (LoRA+)",
        "lora",
        optimizer=loraplus_optimizer,
    ),
    "qlora": Method(
        QloraParams,
        apply_qlora,
        "adapter",
        True,
        "LoRA on a 4-bit NF4 (or 8-bit) quantised base",
        "lora",
        load_kwargs=qlora_load_kwargs,
        after_load=keep_cpu_weights_trainable,
    ),
    "adalora": Method(
        AdaLoraParams,
        apply_adalora,
        "adapter",
        True,
        "SVD-form LoRA with ranks re-allocated by importance",
        "lora",
        callbacks=adalora_callbacks,
    ),
    "loha": Method(LohaParams, apply_loha, "adapter", True, "Hadamard product of two low-rank pairs", "lora"),
    "lokr": Method(LokrParams, apply_lokr, "adapter", True, "Kronecker product of small factors", "lora"),
    "vera": Method(
        VeraParams, apply_vera, "adapter", True, "shared frozen random pair, trained scaling vectors", "lora"
    ),
    # prompt learning
    "prompt_tuning": Method(
        PromptTuningParams, apply_prompt_tuning, "adapter", False, "learned soft-prompt embeddings", "prompt"
    ),
    "p_tuning": Method(
        PTuningParams, apply_p_tuning, "adapter", False, "soft prompt from an MLP/LSTM encoder", "prompt"
    ),
    "prefix_tuning": Method(
        PrefixTuningParams, apply_prefix_tuning, "adapter", False, "learned key/value prefixes in every layer", "prompt"
    ),
    "p_tuning_v2": Method(
        PTuningV2Params,
        apply_prefix_tuning,
        "adapter",
        False,
        "deep prompts: prefixes on every layer, no MLP",
        "prompt",
    ),
    "mpt": Method(
        MptParams,
        apply_mpt,
        "adapter",
        False,
        "multitask prompt tuning: shared prompt × per-task low rank",
        "prompt",
        after_load=_mpt_after_load,
    ),
    # adapters
    "ia3": Method(Ia3Params, apply_ia3, "adapter", True, "learned scaling of keys, values and FFN input", "adapter"),
    "ln_tuning": Method(
        LnTuningParams, apply_ln_tuning, "adapter", True, "only the normalisation layers train", "adapter"
    ),
    "bitfit": Method(
        BitfitParams, apply_bitfit, "adapter", True, "only biases train (zero biases added if none)", "adapter"
    ),
    "series_adapter": Method(
        SeriesAdapterParams, apply_bottleneck, "adapter", False, "bottleneck adapters after blocks (Houlsby)", "adapter"
    ),
    "parallel_adapter": Method(
        ParallelAdapterParams, apply_bottleneck, "adapter", False, "scaled bottleneck adapters beside blocks", "adapter"
    ),
    # orthogonal and spectral
    "oft": Method(OftParams, apply_oft, "adapter", True, "block-diagonal orthogonal rotation of inputs", "other"),
    "boft": Method(BoftParams, apply_boft, "adapter", True, "orthogonal rotation from butterfly factors", "other"),
    "hra": Method(HraParams, apply_hra, "adapter", True, "chain of Householder reflections", "other"),
    "fourierft": Method(
        FourierFtParams, apply_fourierft, "adapter", True, "few learned 2-D Fourier coefficients of ΔW", "other"
    ),
}

# name -> params model, for `tuneforge.config.load(..., methods=METHOD_PARAMS)`.
METHOD_PARAMS: dict[str, type[MethodSection]] = {name: m.params for name, m in METHODS.items()}


def method_of(params: MethodSection | str) -> Method:
    name = params if isinstance(params, str) else params.name
    try:
        return METHODS[name]
    except KeyError:
        raise MethodError(
            f"method.name={name!r} is not a known method; allowed: {', '.join(sorted(METHODS))}"
        ) from None


def apply_method(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    """Prepare `model` for `params.name`; returns the model to train (maybe a wrapper)."""
    method = method_of(params)
    return method.apply(model, coerce(params, method.params))


def model_load_kwargs(params: MethodSection) -> dict[str, Any]:
    """Extra `load_model(cfg, tokenizer, **kwargs)` arguments the method needs ({} for most)."""
    method = method_of(params)
    return method.load_kwargs(coerce(params, method.params)) if method.load_kwargs else {}


def build_optimizer(model: Any, params: MethodSection, args: TrainingArguments) -> Any | None:
    """The method's own optimiser for Trainer(optimizers=(it, None)); None: the trainer builds its default."""
    method = method_of(params)
    return method.optimizer(model, coerce(params, method.params), args) if method.optimizer else None


def method_callbacks(model: Any, params: MethodSection) -> list[TrainerCallback]:
    """Trainer callbacks the method needs while training ([] for most)."""
    method = method_of(params)
    return method.callbacks(model, coerce(params, method.params)) if method.callbacks else []
