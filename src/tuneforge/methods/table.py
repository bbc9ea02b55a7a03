"""The METHODS table: it maps a name to its params model, its apply function and its output.

Adding a method is one entry in METHODS, every field named (`Method(name=..., params=..., apply=...,
output=..., mergeable=..., family=..., summary=...)`, as PEFT's `register_peft_method` takes them), plus its
params model (a `MethodSection` subclass whose `name` is a Literal of the method's name) and an
`apply(model, params) -> model` that marks what trains. Everything else (config validation, saving, reloading
for chat, merging) follows from the entry. A stage the method cannot train is refused on its params model,
`refused_stages: ClassVar[dict[str, StageRefusal]]` (why, and what to use instead), checked when the config
loads (`Method.refused_stages` shows it); stages rm and pt's vocabulary extension also refuse, before anything
loads, adapter methods without `modules_to_save` (see stages/rm.py, stages/pt.py). A method that needs more than
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
- `prepare_base(model, params) -> model`: what the loaded base needs before an adapter trains on it, a fresh
  one (the method's `apply` calls it) or a saved one trained further (model.adapter) → `prepare_base(...)`
  (QLoRA's k-bit preparation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.config import MethodSection, StageRefusal, refused_stages
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
    prepare_quantized_base,
    qlora_load_kwargs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, TrainerCallback, TrainingArguments

Family = Literal["full", "lora", "prompt", "adapter", "other"]


@dataclass(frozen=True, kw_only=True)
class Method:
    name: str  # the value of `method.name`; equals the Literal `name` of its params model
    params: type[MethodSection]  # its parameters; `refused_stages` on it lists the stages it cannot train
    apply: Callable[[PreTrainedModel, MethodSection], PreTrainedModel]  # returns the model to train
    output: Literal["adapter", "model"]  # what save_trained writes: an adapter folder or a full HF model folder
    mergeable: bool  # whether `merge` can fold the trained weights into the base
    summary: str
    family: Family = "other"
    load_kwargs: Callable[[MethodSection], dict[str, Any]] | None = None
    optimizer: Callable[[Any, MethodSection, TrainingArguments], Any] | None = None
    callbacks: Callable[[Any, MethodSection], list[TrainerCallback]] | None = None
    after_load: Callable[[Any, MethodSection], Any] | None = None
    prepare_base: Callable[[Any, MethodSection], Any] | None = None

    @property
    def refused_stages(self) -> Mapping[str, StageRefusal]:
        """stage -> why this method cannot train it (checked when the config loads)."""
        return refused_stages(self.params)


def _table(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


def _mpt_after_load(model: Any, params: MethodSection) -> Any:
    add_default_task(model, coerce(params, MptParams).task_id)
    return model


METHODS: dict[str, Method] = _table(
    # full-weight training
    Method(
        name="full",
        params=FullParams,
        apply=apply_full,
        output="model",
        mergeable=False,
        family="full",
        summary="every weight trains",
    ),
    Method(
        name="freeze",
        params=FreezeParams,
        apply=apply_freeze,
        output="model",
        mergeable=False,
        family="full",
        summary="only chosen decoder layers (and extra modules) train",
    ),
    Method(
        name="galore",
        params=GaloreParams,
        apply=apply_low_rank_optim,
        output="model",
        mergeable=False,
        family="full",
        summary="every weight trains; gradients of linear layers projected to low rank (GaLore)",
        optimizer=galore_optimizer,
    ),
    Method(
        name="apollo",
        params=ApolloParams,
        apply=apply_low_rank_optim,
        output="model",
        mergeable=False,
        family="full",
        summary="every weight trains; AdamW-like update scaled from a random low-rank projection (APOLLO)",
        optimizer=apollo_optimizer,
    ),
    # LoRA family
    Method(
        name="lora",
        params=LoraParams,
        apply=apply_lora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="low-rank adapters (PEFT LoRA)",
    ),
    Method(
        name="dora",
        params=DoraParams,
        apply=apply_lora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="LoRA with magnitude/direction split",
    ),
    Method(
        name="rslora",
        params=RsLoraParams,
        apply=apply_lora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="LoRA scaled by alpha/sqrt(r)",
    ),
    Method(
        name="pissa",
        params=PissaParams,
        apply=apply_lora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="LoRA initialised from the principal SVD part",
    ),
    Method(
        name="olora",
        params=OloraParams,
        apply=apply_lora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="LoRA initialised by QR decomposition",
    ),
    Method(
        name="lora_plus",
        params=LoraPlusParams,
        apply=apply_lora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="LoRA with B learning faster than A (LoRA+)",
        optimizer=loraplus_optimizer,
    ),
    Method(
        name="qlora",
        params=QloraParams,
        apply=apply_qlora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="LoRA on a 4-bit NF4 (or 8-bit) quantised base",
        load_kwargs=qlora_load_kwargs,
        after_load=keep_cpu_weights_trainable,
        prepare_base=prepare_quantized_base,
    ),
    Method(
        name="adalora",
        params=AdaLoraParams,
        apply=apply_adalora,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="SVD-form LoRA with ranks re-allocated by importance",
        callbacks=adalora_callbacks,
    ),
    Method(
        name="loha",
        params=LohaParams,
        apply=apply_loha,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="Hadamard product of two low-rank pairs",
    ),
    Method(
        name="lokr",
        params=LokrParams,
        apply=apply_lokr,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="Kronecker product of small factors",
    ),
    Method(
        name="vera",
        params=VeraParams,
        apply=apply_vera,
        output="adapter",
        mergeable=True,
        family="lora",
        summary="shared frozen random pair, trained scaling vectors",
    ),
    # prompt learning
    Method(
        name="prompt_tuning",
        params=PromptTuningParams,
        apply=apply_prompt_tuning,
        output="adapter",
        mergeable=False,
        family="prompt",
        summary="learned soft-prompt embeddings",
    ),
    Method(
        name="p_tuning",
        params=PTuningParams,
        apply=apply_p_tuning,
        output="adapter",
        mergeable=False,
        family="prompt",
        summary="soft prompt from an MLP/LSTM encoder",
    ),
    Method(
        name="prefix_tuning",
        params=PrefixTuningParams,
        apply=apply_prefix_tuning,
        output="adapter",
        mergeable=False,
        family="prompt",
        summary="learned key/value prefixes in every layer",
    ),
    Method(
        name="p_tuning_v2",
        params=PTuningV2Params,
        apply=apply_prefix_tuning,
        output="adapter",
        mergeable=False,
        family="prompt",
        summary="deep prompts: prefixes on every layer, no MLP",
    ),
    Method(
        name="mpt",
        params=MptParams,
        apply=apply_mpt,
        output="adapter",
        mergeable=False,
        family="prompt",
        summary="multitask prompt tuning: shared prompt × per-task low rank",
        after_load=_mpt_after_load,
    ),
    # adapters
    Method(
        name="ia3",
        params=Ia3Params,
        apply=apply_ia3,
        output="adapter",
        mergeable=True,
        family="adapter",
        summary="learned scaling of keys, values and FFN input",
    ),
    Method(
        name="ln_tuning",
        params=LnTuningParams,
        apply=apply_ln_tuning,
        output="adapter",
        mergeable=True,
        family="adapter",
        summary="only the normalisation layers train",
    ),
    Method(
        name="bitfit",
        params=BitfitParams,
        apply=apply_bitfit,
        output="adapter",
        mergeable=True,
        family="adapter",
        summary="only biases train (zero biases added if none)",
    ),
    Method(
        name="series_adapter",
        params=SeriesAdapterParams,
        apply=apply_bottleneck,
        output="adapter",
        mergeable=False,
        family="adapter",
        summary="bottleneck adapters after blocks (Houlsby)",
    ),
    Method(
        name="parallel_adapter",
        params=ParallelAdapterParams,
        apply=apply_bottleneck,
        output="adapter",
        mergeable=False,
        family="adapter",
        summary="scaled bottleneck adapters beside blocks",
    ),
    # orthogonal and spectral
    Method(
        name="oft",
        params=OftParams,
        apply=apply_oft,
        output="adapter",
        mergeable=True,
        family="other",
        summary="block-diagonal orthogonal rotation of inputs",
    ),
    Method(
        name="boft",
        params=BoftParams,
        apply=apply_boft,
        output="adapter",
        mergeable=True,
        family="other",
        summary="orthogonal rotation from butterfly factors",
    ),
    Method(
        name="hra",
        params=HraParams,
        apply=apply_hra,
        output="adapter",
        mergeable=True,
        family="other",
        summary="chain of Householder reflections",
    ),
    Method(
        name="fourierft",
        params=FourierFtParams,
        apply=apply_fourierft,
        output="adapter",
        mergeable=True,
        family="other",
        summary="few learned 2-D Fourier coefficients of ΔW",
    ),
)

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


def prepare_base(model: Any, params: MethodSection) -> Any:
    """The loaded base made ready for a saved adapter of `params`' method to train on (most need nothing)."""
    method = method_of(params)
    return method.prepare_base(model, coerce(params, method.params)) if method.prepare_base else model
