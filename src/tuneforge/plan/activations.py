"""The bytes autograd keeps for backward: per decoder layer and token, and per forward (weight-sized).

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models") count
s·b·h·(34 + 5·a·s/h) bytes per layer for a GPT layer in 16-bit with dropout, GeLU MLP (4h) and
multi-head attention whose scores are kept. A Llama layer differs in every one of those points, so the same
bookkeeping (which tensors each op saves, counted once per storage) is redone here for what transformers 5
runs: RMSNorm (x kept in fp32, 1/rms, the normalised x only when the norm's weight trains), q/k/v/o with
grouped KV heads, RoPE (cos/sin shared by all layers), SDPA (q, k, v, the output — which o_proj reuses as
its input — and the fp32 log-sum-exp; no s×s scores: a flash-style kernel, which is what transformers uses by
default and what the CPU runs) or eager attention (k and v repeated to every head, the s×s probabilities kept
in fp32 plus their 16-bit copy), SwiGLU (gate, up, silu(gate), and their product when down_proj needs its
input), no dropout. A linear layer keeps its input only when something needs it for a weight gradient, which
is what separates full fine-tuning from LoRA from a frozen layer that gradients only pass through.

Every rule below was read off `torch.autograd.graph.saved_tensors_hooks` on real layers (the storages still
referenced by the graph at the end of the forward, parameters excluded): tests/test_plan.py repeats that
measurement on tiny models for every method and compares it with these formulas.

Per token of a layer (h hidden, I intermediate, q = heads·head_dim, k = kv_heads·head_dim, A = activation
bytes, 4 = fp32), SDPA:

    frozen, gradients passing:  2·(4h + 4) + A·(2q + 2k) + 4·heads + A·3I
    full fine-tuning adds:      2·A·h (normalised x of both norms) + 2·A·h (q/k/v and gate/up inputs) + A·I

Adapters add their own (LoRA: the fp32 input copy per target when A < 4, r floats per target; DoRA: two
output-sized fp32 tensors; VeRA: r + out; IA³: the scaled output or input; bottlenecks: input + bottleneck).
Some methods keep weight-sized tensors per forward (DoRA's norms, LoHa/LoKr/FourierFT's ΔW, HRA's
reflections, OFT/BOFT's rotations): these count per layer, not per token, and dominate for large layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.plan.shapes import ModelShape
from tuneforge.plan.trainable import Adaptation, Target

FP32 = 4
# Adapter kinds whose first operation multiplies the layer input by a trained matrix, so they keep that input.
X_SAVING = ("lora", "dora", "adalora", "loha", "lokr", "fourierft", "oft", "hra", "boft", "ia3_in")
# The input tensor each linear role reads (q, k, v share one; gate and up share one).
INPUT_OF = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "o_proj": "attn_out",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "mlp_mid",
}


@dataclass(frozen=True)
class LayerBytes:
    per_token: float  # bytes per token of the micro-batch
    per_forward: float  # bytes per forward pass, whatever the tokens (weight-sized tensors)


def layer_bytes(shape: ModelShape, a: Adaptation, layer: int, act: int, seq: int, attention: str) -> LayerBytes:
    """What layer `layer` keeps for backward, per token (at sequence length `seq`) and per forward."""
    blocks = [a.traverses(layer, 0), a.traverses(layer, 1)]
    if not any(blocks):
        return LayerBytes(0.0, 0.0)
    h, inter = shape.hidden, shape.intermediate
    prefix = f"model.layers.{layer}"
    targets = [t for t in a.targets if t.linear.layer == layer]
    per_token = 0.0
    widths = {"attn_in": h, "attn_out": shape.q_width, "mlp_in": h, "mlp_mid": inter}
    if blocks[0]:
        per_token += _norm(h, act, f"{prefix}.input_layernorm" in a.norms_trainable)
        per_token += _attention(shape, act, seq, a, attention)
    if blocks[1]:
        per_token += _norm(h, act, f"{prefix}.post_attention_layernorm" in a.norms_trainable)
        per_token += act * 3 * inter  # gate, up, silu(gate)
    for group, width in widths.items():
        if blocks[0 if group.startswith("attn") else 1]:
            per_token += _inputs(a, targets, prefix, group, width, act, attention)
    per_forward = 0.0
    for t in targets:
        tok, fwd = _adapter(t, act)
        per_token += tok
        per_forward += fwd
    for b in a.bottlenecks:
        if b.layer == layer:
            per_token += _bottleneck(h, b.size, b.activation, b.learned, act)
    return LayerBytes(per_token, per_forward)


def _norm(width: int, act: int, trainable: bool) -> float:
    # x in fp32 (a copy when the model runs in 16 bits) and 1/rms; the normalised x when the weight trains
    return FP32 * width + FP32 + (act * width if trainable else 0)


def _attention(shape: ModelShape, act: int, seq: int, a: Adaptation, attention: str) -> float:
    q, k = shape.q_width, shape.kv_width
    keys = seq + a.virtual_tokens + a.prefix_tokens
    queries = seq + a.virtual_tokens
    ratio = keys / queries
    if attention == "eager":  # q, k and v repeated to every head, fp32 probabilities (+ their 16-bit copy)
        probs = (FP32 + (act if act < FP32 else 0)) * shape.heads * keys
        return act * (q + 2 * q * ratio) + probs
    out = act * (2 * q + 2 * k * ratio) + FP32 * shape.heads  # q, output; k, v; log-sum-exp
    if a.prefix_tokens:  # the prefix comes with an explicit mask, and SDPA's CPU path then keeps the scores
        out += FP32 * shape.heads * keys
    return out


def _inputs(a: Adaptation, targets: list[Target], prefix: str, group: str, width: int, act: int, attn: str) -> float:
    """The input tensor of one group of linear layers, kept once if anyone needs it in the activation dtype,
    plus one fp32 copy per adapter that casts it (peft adapters run in fp32 over a 16-bit base)."""
    roles = [r for r, g in INPUT_OF.items() if g == group]
    base = any(f"{prefix}.{'self_attn' if group.startswith('attn') else 'mlp'}.{r}" in a.base_trainable for r in roles)
    savers = [t for t in targets if INPUT_OF.get(t.linear.role) == group and keeps_input(t, act)]
    shared = base or (act == FP32 and bool(savers))
    total = 0.0
    if shared and not (group == "attn_out" and attn == "sdpa"):  # SDPA's output is already kept
        total += act * width
    if act < FP32:
        total += FP32 * width * len(savers)
    return total


def keeps_input(t: Target, act: int) -> bool:
    # BOFT over a 16-bit base rotates the weight in the activation dtype and keeps no fp32 input copy
    return t.kind in X_SAVING and not (t.kind == "boft" and act < FP32)


def _adapter(t: Target, act: int) -> tuple[float, float]:
    """(per token, per forward) bytes an adapter on one linear keeps beyond its input."""
    fan_in, fan_out, r = t.linear.in_features, t.linear.out_features, t.rank
    if t.kind in ("lora", "adalora"):
        return FP32 * r + (FP32 * fan_out if t.kind == "adalora" and act < FP32 else 0), 0.0
    if t.kind == "dora":  # base and LoRA results, both scaled by the magnitude; the weight norm per forward
        return FP32 * r + (FP32 + act) * fan_out, 3 * FP32 * fan_out
    if t.kind == "vera":
        return FP32 * (r + fan_out), 0.0
    if t.kind == "ia3_out":
        return act * fan_out, 0.0
    if t.kind in ("loha", "lokr", "fourierft"):  # ΔW (out × in, fp32) built per forward, kept for the input grad
        return 0.0, FP32 * fan_in * fan_out
    if t.kind == "oft":  # the block-diagonal rotation and its Cayley-Neumann terms
        return 0.0, 4 * FP32 * fan_in * r
    if t.kind == "boft":  # dense in × in butterfly rotations per factor; the output scaling keeps the output
        return (3 if act < FP32 else FP32) * fan_out, 2 * FP32 * fan_in**2 * t.factors
    if t.kind == "hra":  # r reflections (in × in), the chained product, and the rotated weight (out × in)
        cast = FP32 * fan_in * fan_out if act < FP32 else 0
        return 0.0, (r + 1) * FP32 * fan_in**2 + FP32 * fan_in * fan_out + cast
    return 0.0, 0.0  # ia3_in: its input only


def _bottleneck(width: int, size: int, activation: str, learned: bool, act: int) -> float:
    # down keeps the adapter's input; tanh / relu keep their output (which up reuses), gelu / silu their input too
    kept = act * (width + size * (1 if activation in ("tanh", "relu") else 2))
    return kept + (act * width if learned else 0)  # a learned scale keeps the unscaled output


def saved_bytes(
    shape: ModelShape, a: Adaptation, act: int, seq: int, tokens: int, attention: str, checkpointing: bool, res: int
) -> tuple[float, float]:
    """(kept for backward in all layers, the recomputed layer's own during backward) for `tokens` tokens.

    With gradient checkpointing every traversed layer keeps only its input (`res` bytes per hidden value, the
    residual stream's dtype), and backward recomputes one layer at a time on top of that.
    """
    per_layer = [layer_bytes(shape, a, i, act, seq, attention) for i in range(shape.layers)]
    full = [lb.per_token * tokens + lb.per_forward for lb in per_layer]
    if not checkpointing:
        return sum(full), 0.0
    inputs = sum(res * shape.hidden * tokens for lb in per_layer if lb.per_token or lb.per_forward)
    return inputs, max(full, default=0.0)
