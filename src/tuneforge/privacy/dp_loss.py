"""The per-sample loss DP-SGD differentiates: each row's mean over its own label tokens.

transformers' causal-LM loss divides the batch's summed token losses by the batch's label-token count, so a row's
gradient would depend on how many tokens the *other* rows have: clipping would still bound it, but removing one
sample would change every other sample's gradient, and the sensitivity analysis behind ε would not hold. Here a
row's loss is its own token mean, and the batch loss is the mean of the rows' losses, which is what opacus' "mean"
loss reduction assumes (its hooks multiply the backpropagated values by the row count, so each row's per-sample
gradient is the gradient of its own loss).

Two paths compute it: the plain one from the model's full logits, and a label-only one (train.label_only_logits,
docs/speed.md) that projects only the label positions onto the vocabulary, in chunks; the label-only path needs a
frozen lm_head (opacus must see a trainable head called on [rows, tokens, hidden] inputs) and is checked against
the plain path at run start (dp_trainer.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100
CHUNK = 1024  # label positions projected onto the vocabulary at once


def per_sample_loss(model: nn.Module, inputs: dict[str, Any], parts: tuple[nn.Module, nn.Module] | None = None) -> Any:
    """[rows] tensor: each row's mean token loss (0 for a row without labels). `parts` = (backbone, lm_head) for
    the label-only path (see the module docstring), None for the plain path."""
    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    kwargs["use_cache"] = False
    targets = labels[:, 1:]
    keep = targets != IGNORE
    counts = keep.sum(1).clamp(min=1)
    if parts is None:
        logits = model(**kwargs).logits
        if logits.shape[1] > labels.shape[1]:  # prompt learning puts virtual tokens in front of the row
            logits = logits[:, logits.shape[1] - labels.shape[1] :]
        logits = logits[:, :-1].float()
        safe = targets.masked_fill(~keep, 0)
        token = F.cross_entropy(logits.transpose(1, 2), safe, reduction="none") * keep
        return token.sum(1) / counts
    backbone, head = parts
    hidden = backbone(**kwargs)[0][:, :-1]
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(targets)[keep]
    h, y = hidden[keep], targets[keep]
    total = hidden.new_zeros(labels.shape[0], dtype=torch.float32)
    for start in range(0, h.shape[0], CHUNK):
        part = checkpoint(_token_losses, head, h[start : start + CHUNK], y[start : start + CHUNK], use_reentrant=False)
        total = total.index_add(0, rows[start : start + CHUNK], part)
    return total / counts


def _token_losses(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def head_is_frozen(parts: tuple[nn.Module, nn.Module]) -> bool:
    return not any(p.requires_grad for p in parts[1].parameters())


__all__ = ["head_is_frozen", "per_sample_loss"]
