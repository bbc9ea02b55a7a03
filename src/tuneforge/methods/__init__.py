"""Fine-tuning methods: the METHODS table maps a name to its params model, its apply function and its output.

Adding a method is one entry in METHODS plus its params model (a `MethodSection` subclass whose `name` is a
Literal of the method's name) and an `apply(model, params) -> model` that marks what trains. Everything else
(config validation, saving, reloading for chat, merging) follows from the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.config import MethodSection
from tuneforge.methods.common import MethodError, coerce
from tuneforge.methods.full import FreezeParams, FullParams, apply_freeze, apply_full
from tuneforge.methods.lora import LoraParams, apply_lora, save_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Method:
    params: type[MethodSection]
    apply: Callable[[PreTrainedModel, MethodSection], PreTrainedModel]  # returns the model to train
    output: Literal["adapter", "model"]  # what save_trained writes: a PEFT adapter or a full HF model folder
    mergeable: bool  # whether `merge` can fold the trained weights into the base
    summary: str


METHODS: dict[str, Method] = {
    "full": Method(FullParams, apply_full, "model", False, "every weight trains"),
    "freeze": Method(
        FreezeParams, apply_freeze, "model", False, "only chosen decoder layers (and extra modules) train"
    ),
    "lora": Method(
        LoraParams, apply_lora, "adapter", True, "low-rank adapters (PEFT): LoRA, DoRA, rsLoRA, PiSSA, OLoRA"
    ),
}

# name -> params model, for `tuneforge.config.load(..., methods=METHOD_PARAMS)`.
METHOD_PARAMS: dict[str, type[MethodSection]] = {name: m.params for name, m in METHODS.items()}


def method_of(params: MethodSection) -> Method:
    try:
        return METHODS[params.name]
    except KeyError:
        raise MethodError(
            f"method.name={params.name!r} is not a known method; allowed: {', '.join(sorted(METHODS))}"
        ) from None


def apply_method(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    """Prepare `model` for `params.name`; returns the model to train (maybe a wrapper)."""
    method = method_of(params)
    return method.apply(model, coerce(params, method.params))


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared (tied) tensor counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():  # already skips repeats of one Parameter object
        # Distinct Parameter objects can still share storage (some tying schemes); count that storage once.
        key = p.data_ptr() if p.device.type != "meta" and p.numel() else id(p)
        if key in seen:
            continue
        seen.add(key)
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def describe(model: Any, params: MethodSection) -> str:
    """One log line: the method, its settings, and trainable / total parameters."""
    trainable, total = count_parameters(model)
    settings = ", ".join(f"{k}={v}" for k, v in params.model_dump(exclude={"name"}).items())
    share = 100.0 * trainable / total if total else 0.0
    head = f"method {params.name}" + (f" ({settings})" if settings else "")
    return f"{head}: {trainable:,} trainable of {total:,} parameters ({share:.2f}%)"


def save_trained(
    model: Any, params: MethodSection, out_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> Path:
    """Write the trained result (adapter or full model, safetensors) and the tokenizer to `out_dir`."""
    method = method_of(params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if method.output == "adapter":
        save_adapter(model, out_dir)
    else:
        if _is_peft(model):
            raise MethodError(f"method {params.name} saves a full model, but got a PEFT model; merge first")
        model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def load_trained(base_model: Any | None, output_dir: Path, *, trust_remote_code: bool = False) -> Any:
    """Reload what `save_trained` wrote: an adapter on `base_model`, or the full model folder itself.

    The folder says which it is (adapter_config.json or config.json), so no params are needed. A full model is
    loaded in the base model's dtype when a base is given.
    """
    output_dir = Path(output_dir)
    if (output_dir / "adapter_config.json").is_file():
        if base_model is None:
            raise MethodError(f"{output_dir} is an adapter; load its base model and pass it as base_model")
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, str(output_dir))
    if (output_dir / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        dtype = base_model.dtype if base_model is not None else None
        return AutoModelForCausalLM.from_pretrained(
            str(output_dir), dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    raise MethodError(
        f"{output_dir} holds neither a PEFT adapter (adapter_config.json) nor a model (config.json)"
    )


def merge(model: Any) -> Any:
    """Fold adapters into the base weights and return the plain model; only for adapter methods."""
    if not _is_peft(model):
        raise MethodError(
            "nothing to merge: this model has no adapter (full and freeze train the model's own weights, "
            "so their saved model is already complete)"
        )
    if not hasattr(model, "merge_and_unload"):
        kind = type(model.base_model).__name__
        raise MethodError(f"the adapter type {kind} cannot be merged into the base")
    return model.merge_and_unload()


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


__all__ = [
    "METHODS",
    "METHOD_PARAMS",
    "FreezeParams",
    "FullParams",
    "LoraParams",
    "Method",
    "MethodError",
    "apply_method",
    "count_parameters",
    "describe",
    "load_trained",
    "merge",
    "method_of",
    "save_trained",
]
