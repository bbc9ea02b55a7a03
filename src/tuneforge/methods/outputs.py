"""What a trained method leaves behind: parameter counts, saving, reloading and merging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config import MethodSection
from tuneforge.methods import native
from tuneforge.methods.common import MethodError, coerce, match_task
from tuneforge.methods.lora import save_adapter
from tuneforge.methods.qlora import is_quantized, merge_quantized
from tuneforge.methods.table import apply_method, method_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The file a saved method output carries besides its weights: the method params, so a reload can finish
# what PEFT's own loading does not (see Method.after_load) and a reader knows how it was trained.
METHOD_FILE = "tuneforge_method.json"
PEFT_CONFIG = "adapter_config.json"  # PEFT's own adapter config file


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


def is_adapter_folder(folder: Path) -> bool:
    """Whether `folder` holds an adapter `load_trained` puts on a base (PEFT's or tuneforge's own format)."""
    return (Path(folder) / PEFT_CONFIG).is_file() or native.is_native_folder(Path(folder))


def adapter_base_name(folder: Path) -> str | None:
    """The base model an adapter folder says it was trained on (PEFT's base_model_name_or_path), if any."""
    path = Path(folder) / PEFT_CONFIG
    if not path.is_file():
        path = Path(folder) / native.CONFIG_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        return None
    return str(value) if value else None


def load_trained(
    base_model: Any | None, output_dir: Path, *, trust_remote_code: bool = False, is_trainable: bool = False
) -> Any:
    """Reload what `save_trained` wrote: an adapter on `base_model`, or the full model folder itself.

    The folder says which it is (adapter_config.json, tuneforge_adapter.json or config.json), so no params are
    needed. A full model is loaded in the base model's dtype when a base is given. A QLoRA adapter needs a base
    loaded with `model_load_kwargs(params)` to reproduce the trained model exactly. `is_trainable`: the adapter
    trains on (model.adapter continues a run), as PEFT's `PeftModel.from_pretrained(..., is_trainable=True)`.
    """
    output_dir = Path(output_dir)
    is_peft = (output_dir / PEFT_CONFIG).is_file()
    if is_peft or native.is_native_folder(output_dir):
        if base_model is None:
            raise MethodError(f"{output_dir} is an adapter; load its base model and pass it as base_model")
        if not is_peft:
            params = method_of(str(native.read_native_spec(output_dir)["name"])).params.model_validate(
                native.read_native_spec(output_dir)
            )
            # apply_method marks the native adapter's tensors trainable; loading keeps them so
            loaded = native.load_native_weights(apply_method(base_model, params), output_dir)
            return loaded if is_trainable else loaded.eval()
        from peft import PeftConfig, PeftModel

        # The wrapper for the base's kind: a causal-LM adapter folded into a reward model (stage rm) is SEQ_CLS.
        config = match_task(base_model, PeftConfig.from_pretrained(str(output_dir)))
        model = PeftModel.from_pretrained(base_model, str(output_dir), config=config, is_trainable=is_trainable)
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
