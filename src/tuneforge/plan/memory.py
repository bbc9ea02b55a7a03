"""Bytes per device: weights, adapter, gradients, optimizer state, activations, and their peak over a step.

A step's memory peaks at one of three moments, and the plan reports the largest:

- the end of the forward: every activation is kept, and the loss's own work (one chunk of logits with the
  label-only loss, the whole `[tokens, vocab]` logits otherwise) sits on top;
- inside backward: activations are freed layer by layer while gradients appear, so the peak is the larger of
  (activations + gradients that exist early: the output head's, or all of them under gradient accumulation)
  and (all gradients), plus one layer's gradients and one layer's working set;
- the optimizer step: all gradients and the step's temporaries (torch's foreach AdamW on a GPU holds one fp32
  copy of the trained parameters; the CPU's per-tensor loop one tensor).

Optimizer state exists from the first step on, so it is counted in all three (a run peaks from step 2).
Sharding (distributed.strategy) divides what it shards by the device count: DDP nothing (and keeps a
gradient-sized bucket copy), ZeRO-2 / FSDP grad_op the gradients and optimizer state, ZeRO-3 / FSDP full
shard those and the weights, plus the gathered working set of one decoder layer and the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tuneforge.plan import PlanError
from tuneforge.plan.activations import FP32, layer_bytes, saved_bytes
from tuneforge.plan.shapes import ModelShape
from tuneforge.plan.trainable import Adaptation, LowRank, Tensor


@dataclass(frozen=True)
class Precision:
    name: str
    weight: int  # bytes per weight as stored (frozen and trained base weights)
    act: int  # bytes per activation value (matmul outputs)
    autocast: bool  # fp32 weights, 16-bit compute: each linear weight's 16-bit copy is kept from forward to backward
    summary: str


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", 4, 4, False, "fp32 weights and compute"),
        Precision("bf16", 2, 2, False, "bf16 weights and compute (trained base weights and their Adam state too)"),
        Precision("fp16", 2, 2, False, "fp16 weights and compute"),
        Precision("bf16-mixed", 4, 2, True, "fp32 master weights, bf16 autocast compute (train.bf16_autocast)"),
        Precision("fp16-mixed", 4, 2, True, "fp32 master weights, fp16 autocast compute"),
    )
}

# transformers optimiser names -> how many bytes of state per trained value (None: a rule below)
ADAM_32 = ("adamw_torch", "adamw_torch_fused", "adamw_apex_fused", "adamw_anyprecision", "paged_adamw_32bit")
ADAM_8 = ("adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit")
OPTIMIZERS = (*ADAM_32, *ADAM_8, "adafactor", "sgd", "lion_32bit", "paged_lion_32bit", "lion_8bit", "paged_lion_8bit")
BNB_MIN_8BIT = 4096  # bitsandbytes keeps tensors smaller than this in 32-bit state (min_8bit_size)
BNB_BLOCK = 256  # values per absmax of its block-wise 8-bit optimiser states
NF4_BLOCK = 64  # values per absmax of a 4-bit weight (bitsandbytes' default blocksize)
DOUBLE_QUANT_BLOCK = 256  # absmax values per fp32 constant once they are quantised themselves

Strategy = Literal["single", "ddp", "zero2", "zero3", "fsdp", "fsdp_grad_op"]
SHARDS_GRADS = ("zero2", "zero3", "fsdp", "fsdp_grad_op")
SHARDS_WEIGHTS = ("zero3", "fsdp")


@dataclass(frozen=True)
class Setup:
    shape: ModelShape
    adaptation: Adaptation
    precision: Precision
    seq: int
    batch: int
    grad_accum: int = 1
    checkpointing: bool = False
    attention: Literal["sdpa", "eager"] = "sdpa"
    optim: str = "adamw_torch"
    label_only: bool = True  # tuneforge's chunked label-only loss (train.label_only_logits)
    strategy: Strategy = "single"
    devices: int = 1
    offload: bool = False
    device_kind: Literal["cpu", "gpu"] = "cpu"

    @property
    def tokens(self) -> int:
        """Tokens one device computes per micro-batch (virtual tokens of prompt methods included)."""
        return self.batch * (self.seq + self.adaptation.virtual_tokens)


@dataclass(frozen=True)
class Component:
    name: str
    bytes: float  # per device
    note: str = ""
    offloaded: float = 0.0  # bytes moved to CPU memory by distributed.offload


@dataclass
class Memory:
    components: list[Component]
    peak: float  # per device
    moment: str  # which moment of the step peaks
    cpu_offload: float = 0.0
    serving: list[Component] = field(default_factory=list)

    def get(self, name: str) -> float:
        return sum(c.bytes for c in self.components if c.name == name)


def tensor_bytes(t: Tensor, p: Precision) -> int:
    return t.numel * (FP32 if t.dtype == "fp32" else p.weight)


def weights_bytes(s: Setup) -> float:
    """The base model's weights: quantised linear layers (QLoRA) or every weight in the precision's dtype."""
    a, sk = s.adaptation, s.shape.skeleton
    unique = {p.tensor: p for p in sk.params}.values()
    if a.quant_bits is None:
        return float(sum(p.numel for p in unique) * s.precision.weight)
    quantised = {f"{lin.name}.weight": lin for lin in sk.layer_linears()}  # transformers never quantises lm_head
    total = 0.0
    for p in unique:
        lin = quantised.get(p.name)
        if lin is None:  # prepare_model_for_kbit_training casts every weight it does not quantise to fp32
            total += p.numel * FP32
        elif a.quant_bits == 4:
            total += p.numel / 2 + _absmax_bytes(p.numel, a.double_quant)
        else:  # LLM.int8: int8 weights and one fp32 scale per output row
            total += p.numel + lin.out_features * FP32
    return total


def _absmax_bytes(n: int, double: bool) -> float:
    blocks = n / NF4_BLOCK
    if not double:
        return blocks * FP32
    return blocks + blocks / DOUBLE_QUANT_BLOCK * FP32  # 8-bit absmax + their fp32 constants


def optimizer_bytes(s: Setup) -> float:
    a = s.adaptation
    projected = {f"{lin.name}.weight" for lin in a.low_rank.weights} if a.low_rank else set()
    total = 0.0
    for t in a.trainable:
        if t.name in projected and a.low_rank is not None:
            lin = s.shape.skeleton.linear(t.name.removesuffix(".weight"))
            assert lin is not None
            total += low_rank_state(
                lin.out_features, lin.in_features, a.low_rank, tensor_bytes(t, s.precision) // t.numel
            )
        else:
            total += state_bytes(t, s.optim, s.precision)
    return total


def state_bytes(t: Tensor, optim: str, p: Precision) -> float:
    """Optimizer state of one trained tensor (torch keeps Adam's moments in the parameter's dtype)."""
    per = tensor_bytes(t, p) / t.numel
    if optim in ADAM_32:
        return 2 * per * t.numel
    if optim in ADAM_8 or optim in ("lion_8bit", "paged_lion_8bit"):
        states = 1 if "lion" in optim else 2
        if t.numel < BNB_MIN_8BIT:
            return states * FP32 * t.numel
        return states * (t.numel + t.numel / BNB_BLOCK * FP32)
    if optim in ("lion_32bit", "paged_lion_32bit"):
        return FP32 * t.numel
    if optim == "adafactor":  # factored second moment for matrices, no first moment (beta1=None)
        return per * (t.rows + t.cols) if t.rows and t.cols else per * t.numel
    if optim == "sgd":
        return 0.0
    raise PlanError(f"train.optim={optim!r} has no memory rule here; known: {', '.join(OPTIMIZERS)}")


def low_rank_state(m: int, n: int, lr: LowRank, per: float) -> float:
    """GaLore / APOLLO state of an m × n weight: moments of the projected gradient and the projection itself."""
    r = min(lr.rank, m, n)
    big, small = max(m, n), min(m, n)
    if lr.proj_type == "std":
        projected, proj = r * big, r * small
    elif lr.proj_type == "reverse_std":
        projected, proj = r * small, r * big
    elif lr.proj_type == "right":
        projected, proj = m * r, r * n
    elif lr.proj_type == "left":
        projected, proj = r * n, m * r
    else:  # full: both sides
        projected, proj = r * r, r * (m + n)
    rows, cols = (projected // r, r) if r else (0, 0)
    if lr.inner == "adafactor":
        moments = per * (rows + cols)
    elif lr.inner == "adamw_8bit":
        moments = 2 * (projected + projected / BNB_BLOCK * FP32)
    else:
        moments = 2 * per * projected
    return moments + per * proj


def activation_parts(s: Setup) -> tuple[float, float, float, float]:
    """(kept in layers, outside the layers, the loss's transient, one layer's working set during backward)."""
    a, sh, act = s.adaptation, s.shape, s.precision.act
    res = FP32 if s.precision.weight == FP32 else act
    kept, recompute = saved_bytes(sh, a, act, s.seq, s.tokens, s.attention, s.checkpointing, res)
    if s.precision.autocast:  # the 16-bit copy of every traversed layer's linear weights
        kept += sum(
            lin.in_features * lin.out_features * act
            for lin in sh.skeleton.layer_linears()
            if lin.layer is not None and a.traverses(lin.layer, 0 if lin.block == "attn" else 1)
        )
    labels = s.batch * s.seq
    traversed = any(a.traverses(i, 0) for i in range(sh.layers)) or a.grad_below
    outside = (FP32 * sh.hidden + FP32) * s.tokens if traversed else 0.0  # the final norm
    if traversed and "model.norm" in a.norms_trainable:
        outside += act * sh.hidden * s.tokens
    if uses_label_only(s):
        outside += act * sh.hidden * labels  # the hidden-state gradient the fused loss keeps
        chunk = min(1024, labels)
        loss: float = chunk * sh.vocab * (FP32 + (act if act < FP32 else 0)) + chunk * sh.hidden * FP32
        loss += sh.vocab * sh.hidden * FP32 if a.head_trains else 0.0  # d_logits.t() @ h of a chunk
    else:
        outside += act * sh.hidden * s.tokens if a.head_trains else 0.0
        # logits, their fp32 copy (16-bit models), log-softmax kept, its gradient
        loss = s.tokens * sh.vocab * (act + (FP32 if act < FP32 else 0) + 2 * FP32)
    per_layer = max(
        (
            lb.per_token * s.tokens + lb.per_forward
            for lb in (layer_bytes(sh, a, i, act, s.seq, s.attention) for i in range(sh.layers))
        ),
        default=0.0,
    )
    working = per_layer + (recompute if s.checkpointing else 0.0)
    return kept, outside, loss, working


def uses_label_only(s: Setup) -> bool:
    # stages/sft: prompt methods prepend virtual tokens inside the PEFT forward, and a wrapped head is no Linear
    wrapped = any(t.name.startswith("lm_head.") and t.new for t in s.adaptation.trainable)
    wrapped = wrapped or any(t.linear.role == "lm_head" for t in s.adaptation.targets)
    return s.label_only and s.adaptation.family != "prompt" and not wrapped


def memory(s: Setup, framework: float, retention: float = 0.0) -> Memory:
    """Every component and the peak per device; `framework` is the runtime's own memory (CPU: measured),
    `retention` the allocator's extra memory as a fraction of activations + loss (glibc on a CPU: measured)."""
    a, p, n = s.adaptation, s.precision, max(s.devices, 1)
    shard_w = n if s.strategy in SHARDS_WEIGHTS else 1
    shard_g = n if s.strategy in SHARDS_GRADS else 1
    weights = weights_bytes(s)
    adapter = sum(tensor_bytes(t, p) for t in a.trainable if t.new) + sum(tensor_bytes(t, p) for t in a.buffers)
    grads = float(sum(tensor_bytes(t, p) for t in a.trainable))
    optim = optimizer_bytes(s)
    kept, outside, loss, working = activation_parts(s)
    offloaded = optim / shard_g if s.offload else 0.0
    on_device, grads_on_device = weights / shard_w, grads / shard_g
    if s.offload and s.strategy in SHARDS_WEIGHTS:  # ZeRO-3's offload_param, FSDP2's cpu_offload: weights too
        offloaded, on_device = offloaded + on_device, 0.0
    if s.offload and s.strategy == "fsdp":  # FSDP2's cpu_offload keeps the sharded gradients in host memory
        offloaded, grads_on_device = offloaded + grads_on_device, 0.0
    comps = [
        Component("framework", framework, "Python + torch + libraries (CPU: measured) / CUDA context (GPU)"),
        Component("weights", on_device, _weights_note(s)),
        Component("adapter", adapter / shard_w, "trained tensors the method adds, its buffers and copies"),
        Component("gradients", grads_on_device, "one per trained value, in its dtype"),
        Component("optimizer", 0.0 if s.offload else optim / shard_g, f"{s.optim}" + _low_rank_note(a)),
        Component("activations", kept + outside, _act_note(s)),
        Component(
            "loss / logits", loss, "one chunk of logits (label-only loss)" if uses_label_only(s) else "full logits"
        ),
    ]
    if retention:
        note = "freed activations glibc keeps, and the next step's laid out anew (measured, docs/plan.md)"
        comps.append(Component("allocator", retention * (kept + outside + loss), note))
    if s.strategy in SHARDS_WEIGHTS:
        layer = max(
            sum(lin.in_features * lin.out_features for lin in s.shape.skeleton.layer_linears() if lin.layer == 0), 0
        )
        comps.append(
            Component("gathered layers", 2 * layer * p.weight, "ZeRO-3 / FSDP: one layer gathered, the next prefetched")
        )
    if s.strategy == "ddp" and n > 1:
        comps.append(Component("ddp buckets", grads, "DDP's gradient buckets (a copy of the gradients)"))
    peak, moment = _peak(s, comps, grads_on_device, kept + outside, loss, working)
    mem = Memory(comps, peak, moment, cpu_offload=offloaded)
    mem.serving = serving(s)
    return mem


def _peak(
    s: Setup, comps: list[Component], grads: float, acts: float, loss: float, working: float
) -> tuple[float, str]:
    static = sum(c.bytes for c in comps if c.name not in ("gradients", "activations", "loss / logits"))
    head_bytes = FP32 if uses_label_only(s) else s.precision.weight  # the fused loss accumulates it in fp32
    head = s.shape.vocab * s.shape.hidden * head_bytes if s.adaptation.head_trains else 0.0
    early = grads if s.grad_accum > 1 else min(grads, head)
    layer_grads = grads / max(s.shape.layers, 1) if s.adaptation.base_trainable else 0.0
    step_temp = _step_temp(s)
    moments = {
        "end of forward": static + acts + loss + early,
        "backward": static + max(acts + early + layer_grads, grads) + working,
        "optimizer step": static + grads + step_temp,
    }
    moment = max(moments, key=lambda k: moments[k])
    return moments[moment], moment


def _step_temp(s: Setup) -> float:
    """torch's AdamW (train.optim=adamw_torch) runs foreach on a GPU: sqrt(exp_avg_sq) of every parameter at
    once; on a CPU it loops over tensors (one at a time). Fused and bitsandbytes optimizers update in place."""
    trained = [tensor_bytes(t, s.precision) for t in s.adaptation.trainable]
    if not trained or s.optim != "adamw_torch" or s.adaptation.low_rank is not None:  # GaLore / APOLLO: their own
        return 0.0
    if s.device_kind == "gpu":
        return float(sum(trained)) / (s.devices if s.strategy in SHARDS_GRADS else 1)
    return float(max(trained))


def serving(s: Setup) -> list[Component]:
    """Memory to serve the trained model: its weights (merged, in the compute dtype, or the 4-bit base) and the
    KV cache for `batch` sequences of `seq` tokens."""
    sh, act = s.shape, s.precision.act
    if s.adaptation.quant_bits is not None:
        weights = weights_bytes(s) + sum(t.numel * FP32 for t in s.adaptation.trainable if t.new)
        note = "quantised base + adapter"
    else:
        weights = sh.skeleton.total() * act + sum(t.numel * act for t in s.adaptation.trainable if t.new)
        note = f"{act * 8}-bit weights (+ adapter, unmerged)"
    keys = s.seq + s.adaptation.virtual_tokens + s.adaptation.prefix_tokens
    kv = 2 * sh.layers * sh.kv_width * act * s.batch * keys
    return [
        Component("serving weights", weights, note),
        Component("kv cache", kv, f"2 × {sh.layers} layers × {sh.kv_width} × {s.batch} seq × {keys} tokens"),
    ]


def _weights_note(s: Setup) -> str:
    a = s.adaptation
    if a.quant_bits == 4:
        return "4-bit NF4 linear layers" + (" (double quant)" if a.double_quant else "") + ", the rest fp32"
    if a.quant_bits == 8:
        return "int8 linear layers, the rest fp32"
    return f"{s.shape.skeleton.total():,} parameters × {s.precision.weight} bytes"


def _low_rank_note(a: Adaptation) -> str:
    return f"; {a.method} projects {len(a.low_rank.weights)} weights to rank {a.low_rank.rank}" if a.low_rank else ""


def _act_note(s: Setup) -> str:
    how = "layer inputs only (checkpointing)" if s.checkpointing else "kept for backward"
    return f"{s.tokens} tokens/device, {s.attention}, {how}"
