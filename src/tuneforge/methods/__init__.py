"""Fine-tuning methods: the METHODS table maps a name to its params model, its apply function and its output.

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

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.config import MethodSection
from tuneforge.methods import native
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
    save_adapter,
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
    is_quantized,
    keep_cpu_weights_trainable,
    merge_quantized,
    qlora_load_kwargs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, TrainingArguments

Family = Literal["full", "lora", "prompt", "adapter", "other"]

# The file a saved method output carries besides its weights: the method params, so a reload can finish
# what PEFT's own loading does not (see Method.after_load) and a reader knows how it was trained.
METHOD_FILE = "tuneforge_method.json"


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


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared (tied) tensor counted once.

    A 4-bit weight is stored packed, two values per byte; it is counted as the weights it holds.
    """
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():  # already skips repeats of one Parameter object
        # Distinct Parameter objects can still share storage (some tying schemes); count that storage once.
        key = p.data_ptr() if p.device.type != "meta" and p.numel() else id(p)
        if key in seen:
            continue
        seen.add(key)
        n = p.numel()
        if type(p).__name__ == "Params4bit":
            n = p.quant_state.shape.numel() if getattr(p, "quant_state", None) is not None else 2 * n
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def describe(model: Any, params: MethodSection) -> str:
    """One log line: the method, its settings, and trainable / total parameters."""
    trainable, total = count_parameters(model)
    settings = ", ".join(f"{k}={v}" for k, v in params.model_dump(exclude={"name"}).items())
    share = 100.0 * trainable / total if total else 0.0
    head = f"method {params.name}" + (f" ({settings})" if settings else "")
    return f"{head}: {trainable:,} trainable of {total:,} parameters ({share:.2f}%)"


def save_trained(model: Any, params: MethodSection, out_dir: Path, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Write the trained result (adapter or full model, safetensors), the tokenizer and the method params."""
    method = method_of(params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if method.output == "adapter" and native.native_params(model) is not None:
        native.save_native(model, out_dir)
    elif method.output == "adapter":
        save_adapter(model, out_dir)
    else:
        if _is_peft(model):
            raise MethodError(f"method {params.name} saves a full model, but got a PEFT model; merge first")
        model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    spec = coerce(params, method.params).model_dump(mode="json")
    (out_dir / METHOD_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return out_dir


def saved_params(output_dir: Path) -> MethodSection | None:
    """The method params a folder was saved with (None for folders tuneforge did not write)."""
    path = Path(output_dir) / METHOD_FILE
    if not path.is_file():
        return None
    spec = json.loads(path.read_text(encoding="utf-8"))
    method = method_of(str(spec.get("name")))
    return method.params.model_validate(spec)


def load_trained(base_model: Any | None, output_dir: Path, *, trust_remote_code: bool = False) -> Any:
    """Reload what `save_trained` wrote: an adapter on `base_model`, or the full model folder itself.

    The folder says which it is (adapter_config.json, tuneforge_adapter.json or config.json), so no params are
    needed. A full model is loaded in the base model's dtype when a base is given. A QLoRA adapter needs a base
    loaded with `model_load_kwargs(params)` to reproduce the trained model exactly.
    """
    output_dir = Path(output_dir)
    is_peft = (output_dir / "adapter_config.json").is_file()
    if is_peft or native.is_native_folder(output_dir):
        if base_model is None:
            raise MethodError(f"{output_dir} is an adapter; load its base model and pass it as base_model")
        if not is_peft:
            params = method_of(str(native.read_native_spec(output_dir)["name"])).params.model_validate(
                native.read_native_spec(output_dir)
            )
            return native.load_native_weights(apply_method(base_model, params), output_dir).eval()
        from peft import PeftModel

        model = PeftModel.from_pretrained(base_model, str(output_dir))
        params_or_none = saved_params(output_dir)
        if params_or_none is not None:
            method = method_of(params_or_none)
            if method.after_load is not None:
                model = method.after_load(model, params_or_none)
        return model
    if (output_dir / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        dtype = base_model.dtype if base_model is not None else None
        return AutoModelForCausalLM.from_pretrained(
            str(output_dir), dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    raise MethodError(
        f"{output_dir} holds neither an adapter (adapter_config.json or {native.CONFIG_FILE}) nor a model (config.json)"
    )


def merge(model: Any) -> Any:
    """Fold adapters into the base weights and return the plain model; only for mergeable adapter methods.

    A quantised (QLoRA) base is dequantised first, so the result is a plain model in the compute dtype.
    """
    params = native.native_params(model)
    if params is not None:
        if not method_of(params).mergeable:
            raise MethodError(f"method {params.name}: its adapters are non-linear and cannot be merged into the base")
        delattr(model, native.NATIVE_ATTR)  # BitFit: the biases already are the model's own
        return model
    if not _is_peft(model):
        raise MethodError(
            "nothing to merge: this model has no adapter (full and freeze train the model's own weights, "
            "so their saved model is already complete)"
        )
    if not hasattr(model.base_model, "merge_and_unload"):
        kind = model.peft_config[model.active_adapter].peft_type
        raise MethodError(
            f"the adapter type {kind} cannot be merged into the base (prompts have no weights to fold into)"
        )
    if is_quantized(model):
        return merge_quantized(model)
    return model.merge_and_unload()


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


__all__ = [
    "METHODS",
    "METHOD_FILE",
    "METHOD_PARAMS",
    "FreezeParams",
    "FullParams",
    "LoraParams",
    "Method",
    "MethodError",
    "apply_method",
    "build_optimizer",
    "count_parameters",
    "describe",
    "load_trained",
    "merge",
    "method_callbacks",
    "method_of",
    "model_load_kwargs",
    "save_trained",
    "saved_params",
]
