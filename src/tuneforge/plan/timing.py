"""FLOPs of a training step and the time it takes on the chosen hardware.

The matrix work is counted per token from the shapes (Kaplan et al.'s 6·N per trained weight: forward 2·N,
input gradient 2·N, weight gradient 2·N; a frozen weight that gradients pass through costs 4·N, one they
never reach 2·N), plus causal attention (QKᵀ and PV: 4·heads·head_dim·k per query token forward, k the mean
number of keys it sees, backward twice that), the output head at label positions (2·h·V forward, the same
again for the hidden-state gradient, and for its weight gradient when it trains), the adapters' own matmuls,
and the weight-sized work some adapters redo every forward (LoHa's and HRA's ΔW, BOFT's rotations, DoRA's
norms). Gradient checkpointing adds one more forward of every traversed layer.

time = FLOPs / (peak FLOP/s × utilisation) + bytes moved / memory bandwidth, where the memory-bound part is
the optimizer step (AdamW reads and writes every trained value's weight, gradient and moments), the weight-
sized tensors of those adapters, and QLoRA's dequantisation of every 4-bit weight in each pass. Communication
between devices is not counted (NVLink-class links keep it under the compute of a step; over Ethernet it is not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuneforge.plan.hardware import Hardware
from tuneforge.plan.memory import ADAM_32, Setup, tensor_bytes, uses_label_only
from tuneforge.plan.shapes import Linear
from tuneforge.plan.trainable import Target


@dataclass(frozen=True)
class Timing:
    flops_per_step: float  # one optimizer step on one device (grad_accum micro-batches)
    compute_s: float
    memory_s: float
    step_s: float
    tokens_per_s: float  # all devices
    steps_per_epoch: int | None
    epoch_s: float | None


def micro_batch_flops(s: Setup) -> float:
    return sum(micro_batch_split(s))


def micro_batch_split(s: Setup) -> tuple[float, float]:
    """(forward, backward) FLOPs of one micro-batch on one device; the recomputation counts as forward."""
    a, sh = s.adaptation, s.shape
    tokens = s.tokens
    fwd = bwd = 0.0
    for lin in sh.skeleton.layer_linears():
        assert lin.layer is not None
        n = lin.in_features * lin.out_features * tokens
        fwd += 2 * n
        if lin.name in a.base_trainable:
            bwd += 4 * n  # input and weight gradients
        elif a.traverses(lin.layer, 0 if lin.block == "attn" else 1):
            bwd += 2 * n  # the input gradient only
    queries = s.seq + a.virtual_tokens
    keys = queries / 2 + a.prefix_tokens  # causal: a query sees half the sequence on average
    attention = 4 * sh.q_width * keys * tokens
    traversed_layers = sum(1 for i in range(sh.layers) if a.traverses(i, 0))
    fwd += attention * sh.layers
    bwd += 2 * attention * traversed_layers
    for t in a.targets:
        f, b = _adapter_token_flops(t)
        fwd, bwd = fwd + f * tokens, bwd + b * tokens
        f, b = _adapter_forward_flops(t)
        fwd, bwd = fwd + f, bwd + b
    bottleneck = sum(4 * sh.hidden * b.size for b in a.bottlenecks) * tokens
    fwd, bwd = fwd + bottleneck, bwd + 2 * bottleneck
    head_tokens = s.batch * s.seq if uses_label_only(s) else tokens
    head = 2 * sh.hidden * sh.vocab * head_tokens
    fwd, bwd = fwd + head, bwd + head * (2 if a.head_trains else 1)
    if s.checkpointing:
        traversed = [lin for lin in sh.skeleton.layer_linears() if a.traverses(lin.layer or 0, 0)]
        fwd += sum(2 * lin.in_features * lin.out_features for lin in traversed) * tokens
        fwd += attention * traversed_layers
    return fwd, bwd


def _adapter_token_flops(t: Target) -> tuple[float, float]:
    fan_in, fan_out, r = t.linear.in_features, t.linear.out_features, t.rank
    if t.kind in ("lora", "adalora", "dora"):
        return 2 * r * (fan_in + fan_out), 4 * r * (fan_in + fan_out)
    if t.kind == "vera":  # frozen shared projections: forward and input gradient only
        return 2 * r * (fan_in + fan_out), 2 * r * (fan_in + fan_out)
    if t.kind in ("loha", "lokr", "fourierft", "hra", "boft"):  # the input goes through ΔW (or W·R) as well
        return 2 * fan_in * fan_out, 4 * fan_in * fan_out
    if t.kind == "oft":
        return 2 * fan_in * r, 4 * fan_in * r
    return 0.0, 0.0


def _adapter_forward_flops(t: Target) -> tuple[float, float]:
    """Weight-sized work per forward, and backward through it (twice the forward where it trains)."""
    fan_in, fan_out, r = t.linear.in_features, t.linear.out_features, t.rank
    if t.kind == "dora":  # B·A·I for the weight norm (detached: no backward)
        return 2 * fan_in * r * (fan_in + fan_out), 0.0
    if t.kind == "loha":
        work: float = 2 * (2 * fan_out * r * fan_in)
    elif t.kind == "fourierft":
        n = fan_in * fan_out
        work = 5 * n * math.log2(max(n, 2))
    elif t.kind == "hra":  # r reflections, I·ΔW and W·(I - …), each in × in or out × in
        work = r * 4 * fan_in**2 + 2 * fan_in**3 + 2 * fan_out * fan_in**2
    elif t.kind == "boft":
        work = t.factors * (4 * fan_in**3 + 2 * fan_out * fan_in**2)
    else:
        return 0.0, 0.0
    return work, 2 * work


def step_memory_bytes(s: Setup) -> float:
    """Bytes moved by memory-bound work in one optimizer step (not counted as FLOPs)."""
    a, p = s.adaptation, s.precision
    trained = sum(tensor_bytes(t, p) for t in a.trainable)
    moved: float = trained * (7 if s.optim in ADAM_32 else 4)  # weight r/w, grad r, two moments r/w
    weight_sized = sum(_weight_sized(t.linear, t) for t in a.targets)
    moved += s.grad_accum * 3 * weight_sized
    return moved


def _weight_sized(lin: Linear, t: Target) -> float:
    if t.kind in ("dora", "loha", "lokr", "fourierft", "hra", "boft"):
        return 4.0 * lin.in_features * lin.out_features
    return 0.0


def timing(s: Setup, hw: Hardware, samples: int | None, epochs: float = 1.0) -> Timing:
    fwd, bwd = micro_batch_split(s)
    fwd, bwd = fwd * s.grad_accum, bwd * s.grad_accum
    if s.adaptation.low_rank is not None:  # projecting each gradient there and back
        lr = s.adaptation.low_rank
        bwd += sum(4 * lr.rank * w.in_features * w.out_features for w in lr.weights)
    flops = fwd + bwd
    peak = hw.peak(s.precision.act)
    compute = fwd / (peak * hw.utilisation) + bwd / (peak * hw.backward_utilisation)
    memory = step_memory_bytes(s) / hw.bandwidth
    if s.adaptation.quant_bits is not None and hw.dequant_per_s:
        quantised = sum(lin.in_features * lin.out_features for lin in s.shape.skeleton.layer_linears())
        passes = 2 + (1 if s.checkpointing else 0)  # forward, input gradient (and the recomputation)
        memory += s.grad_accum * passes * quantised / hw.dequant_per_s
    step = compute + memory
    tokens = s.batch * s.seq * s.grad_accum * s.devices
    per_step = s.batch * s.grad_accum * s.devices
    steps = math.ceil(samples * epochs / per_step) if samples else None
    return Timing(flops, compute, memory, step, tokens / step if step else 0.0, steps, steps * step if steps else None)
