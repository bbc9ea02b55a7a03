"""QLoRA: LoRA on a base loaded in 4-bit NF4 (double quantisation on by default) or 8-bit, via bitsandbytes.

Quantisation happens while the weights load, so the method hands `load_model` a quantization_config
(`Method.load_kwargs`) instead of changing a loaded model. bitsandbytes runs on CPU: the 4-bit forward
dequantises blocks of 64 weights on the fly (layers narrower than 64 inputs cannot be quantised).

Merging cannot fold an fp32 update into 4-bit weights without a second rounding, so `merge_quantized`
dequantises the base first (dequantise → merge → a plain model in `compute_dtype`), which is the export path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from tuneforge.config import MethodSection, StageRefusal
from tuneforge.methods.common import MethodError, coerce
from tuneforge.methods.lora import LoraBase, apply_lora

if TYPE_CHECKING:
    from transformers import PreTrainedModel

INSTALL_HINT = "QLoRA needs bitsandbytes: pip install 'tuneforge[qlora]'"


class QloraParams(LoraBase):
    refused_stages: ClassVar[dict[str, StageRefusal]] = {
        "rm": StageRefusal(
            why="QLoRA's loading leaves the new score head in bfloat16 while the hidden states reaching it are "
            "float32, so the head cannot run; use lora"
        )
    }
    name: Literal["qlora"] = "qlora"
    bits: Literal[4, 8] = Field(4, description="Base weights in 4-bit (NF4/FP4) or 8-bit (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: nf4 (QLoRA) or fp4.")
    double_quant: bool = Field(True, description="4-bit: quantise the quantisation constants too.")
    compute_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Dtype the 4-bit weights are dequantised to for each matmul."
    )

    @model_validator(mode="after")
    def _plain_init(self) -> Self:
        if self.init not in ("default", "gaussian"):
            raise ValueError(f"init={self.init} is not supported on a quantised base; use default or gaussian")
        return self


def _bitsandbytes() -> Any:
    try:
        import bitsandbytes
    except ImportError as e:
        raise MethodError(INSTALL_HINT) from e
    return bitsandbytes


def qlora_load_kwargs(params: MethodSection) -> dict[str, Any]:
    """`from_pretrained` arguments that quantise the base as it loads."""
    import torch
    from transformers import BitsAndBytesConfig

    p = coerce(params, QloraParams)
    _bitsandbytes()
    if p.bits == 8:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    compute = {"float32": torch.float32, "bfloat16": torch.bfloat16}[p.compute_dtype]
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=p.quant_type,
        bnb_4bit_use_double_quant=p.double_quant,
        bnb_4bit_compute_dtype=compute,
    )
    return {"quantization_config": config}


def apply_qlora(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    return apply_lora(prepare_quantized_base(model, params), coerce(params, QloraParams))


def prepare_quantized_base(model: PreTrainedModel, params: MethodSection | None = None) -> PreTrainedModel:
    """The quantised base made ready for an adapter to train on it: a fresh one (apply_qlora) or a saved one
    trained further (model.adapter; `Method.prepare_base`)."""
    from peft import prepare_model_for_kbit_training

    if not is_quantized(model):
        raise MethodError(
            "method qlora: the base model is not quantised; load it with the method's load_kwargs "
            "(tuneforge.methods.model_load_kwargs(params)) so the weights are quantised while they load"
        )
    release_checkpoint_pages(model)
    # Casts the (few) non-quantised weights to fp32 and makes the input embeddings pass gradients on.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    keep_cpu_weights_trainable(model)
    return model


def release_checkpoint_pages(model: Any) -> None:
    """Copy the non-quantised weights (embeddings, norms) out of the memory-mapped checkpoint.

    Quantising reads every fp32 weight of the safetensors file, and those pages stay resident for as long as
    one tensor still points into the mapping: the embedding did, which kept ≈400 MB of the embedded model's
    fp32 checkpoint in the process's memory after loading in 4 bits. Each tensor is copied once (tied weights
    stay one Parameter), so the mapping is released.
    """
    import gc

    seen: set[int] = set()
    for module in model.modules():
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if id(t) in seen or type(t).__name__ in ("Params4bit", "Int8Params") or t.device.type != "cpu":
                continue
            seen.add(id(t))
            t.data = t.data.clone()
    gc.collect()


def keep_cpu_weights_trainable(model: Any, params: MethodSection | None = None) -> Any:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, the first forward pass in eval mode without gradients (an evaluation, a logits
    check) rewrites each Linear4bit weight in place into a packed layout whose kernel has no backward; later
    training steps then silently get no gradient through those layers (bitsandbytes 0.50). Turning the
    per-layer switch off keeps the trainable layout; inference uses the generic dequantising kernel. Also run
    after reloading an adapter, so the reloaded model computes exactly as the trained one did.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            _unpack(module)
    return model


def _unpack(module: Any) -> None:
    # A model that already ran an evaluation (e.g. a before/after comparison) holds packed weights; bitsandbytes
    # undoes the packing itself when it saves a state dict, with this function.
    state = getattr(module.weight, "quant_state", None)
    if state is None or not getattr(state, "packing_format_for_cpu", False):
        return
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(module.weight.data, state)


def is_quantized(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def merge_quantized(model: Any) -> Any:
    """Dequantise the base, re-attach the trained LoRA weights to it and merge: a plain model, no bitsandbytes."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name = model.active_adapter
    config = model.peft_config[name]
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}
    base = model.unload()  # the quantised layers back, adapters dropped
    base.dequantize()  # transformers: bitsandbytes layers -> nn.Linear in the compute dtype
    plain = get_peft_model(base, config)
    set_peft_model_state_dict(plain, state)
    return plain.merge_and_unload()
