"""Causal-LM loss with the vocabulary projection on label positions only, in chunks.

A causal LM's forward projects every position onto the vocabulary (49,152 columns for SmolLM2) and the loss
then reads only the positions that have a label. For chat SFT most positions are prompt tokens, and the full
[tokens, vocab] logits tensor (plus its gradient) is the largest allocation of a step. Here the backbone
runs alone, the hidden states at label positions are selected, and they are projected and scored in chunks
of `chunk` rows, so no more than [chunk, vocab] logits ever exist.

For a plain linear lm_head the chunk's gradient is computed in the forward pass (a fused linear +
cross-entropy, as Liger's kernels do on GPUs) and nothing but the hidden-state gradient is kept; any other
head (e.g. one wrapped by an adapter) runs chunk by chunk under activation checkpointing. The loss is the
same sum over label tokens divided by the same count as transformers' ForCausalLMLoss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100
# Config attributes of models whose logits are not a plain lm_head(hidden) (softcapping, scaling).
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def label_only_parts(model: nn.Module) -> tuple[nn.Module, nn.Module] | str:
    """(backbone, lm_head) of a causal LM, under a PEFT wrapper if any; or why the label-only loss cannot apply."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None:
        if getattr(peft_config, "is_prompt_learning", False):
            return "prompt-learning methods prepend virtual tokens inside the PEFT forward"
        model = model.get_base_model()  # type: ignore[operator]
    head = getattr(model, "lm_head", None)
    get_decoder = getattr(model, "get_decoder", None)
    if not isinstance(head, nn.Module) or get_decoder is None:
        return f"{type(model).__name__} has no lm_head / decoder"
    config = getattr(model, "config", None)
    for attr in LOGIT_TRANSFORMS:
        value = getattr(config, attr, None)
        if value not in (None, 1, 1.0, 0, 0.0):
            return f"{type(model).__name__} transforms its logits ({attr}={value})"
    return get_decoder(), head


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i @ W^T + b, y_i), with the gradients computed chunk by chunk in the forward pass."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if want_b and bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            h_all = hidden.to(weight.dtype)
            for start in range(0, hidden.shape[0], chunk):
                h = h_all[start : start + chunk]
                y = targets[start : start + chunk]
                logits = F.linear(h, weight, bias).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
                if grad_h is None and grad_w is None and grad_b is None:
                    continue
                d_logits = torch.exp(logits.sub_(lse[:, None]))  # softmax, in place of the logits
                d_logits[torch.arange(len(y), device=y.device), y] -= 1.0
                if grad_h is not None:
                    grad_h[start : start + chunk] = (d_logits.to(weight.dtype) @ weight).to(hidden.dtype)
                if grad_w is not None:
                    grad_w += d_logits.t() @ h.float()
                if grad_b is not None:
                    grad_b += d_logits.sum(0)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.which = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        grads: list[torch.Tensor | None] = []
        for present, dtype in zip(ctx.which, (None, *ctx.dtypes), strict=True):
            g = saved.pop(0) * grad_out if present else None
            grads.append(g.to(dtype) if g is not None and dtype is not None else g)
        return (*grads, None, None)


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def label_only_loss(
    backbone: nn.Module,
    head: nn.Module,
    inputs: dict[str, Any],
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """The causal-LM loss of `inputs` (input_ids, labels, optional attention_mask / position_ids), projecting
    only the label positions, `chunk` rows at a time. Normalised like transformers: by num_items_in_batch
    when given (the Trainer's count over an accumulated batch), else by the number of label tokens."""
    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    kwargs["use_cache"] = False
    hidden = backbone(**kwargs)[0]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    h = hidden[:, :-1][keep]
    y = targets[keep].to(h.device)
    if isinstance(head, nn.Linear) and type(head) is nn.Linear:
        total = _LinearCrossEntropy.apply(h, head.weight, head.bias, y, chunk)
    else:
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, h.shape[0], chunk):
            part = checkpoint(
                _chunk_loss, head, h[start : start + chunk], y[start : start + chunk], use_reentrant=False
            )
            total = total + part
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    if isinstance(count, torch.Tensor):
        count = count.to(total.device)
    return total / count


__all__ = ["label_only_loss", "label_only_parts"]
