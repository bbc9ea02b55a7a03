"""How an audit scores text under a model: the training loss of rendered samples, and candidate continuations.

- `sample_logprobs`: per sample, the summed log-probability of its labelled tokens and their count, i.e. the
  training loss of that one sample. eval.lm.LM scores one contiguous continuation per context; a multi-turn chat
  sample's loss covers several assistant spans, so the labels mask is scored here, the way the Trainer's loss
  reads it. Only the label positions are projected onto the vocabulary (models.loss.label_only_parts), so a
  batch never holds [batch, tokens, vocab] logits.
- `continuation_logprobs`: many continuations of a few shared contexts (the canary candidates after one prompt)
  through eval.lm.LM, which runs each context once and its continuations from the KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tuneforge.data.render import IGNORE_INDEX, Rendered
from tuneforge.eval.lm import LM
from tuneforge.models.loss import label_only_parts
from tuneforge.utils.progress import progress_bar

PROJECT_CHUNK = 1024  # label positions projected onto the vocabulary at once


@torch.inference_mode()
def sample_logprobs(model: Any, rows: Sequence[Rendered], batch_size: int, pad_id: int, desc: str) -> np.ndarray:
    """[n, 2]: each row's summed log-prob over its labelled tokens, and their count (input order)."""
    out = np.zeros((len(rows), 2))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].input_ids))  # similar lengths share a batch
    device = next(model.parameters()).device
    with progress_bar(len(rows), desc, unit="sample") as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(rows[i].input_ids) for i in chunk)
            ids = torch.tensor([rows[i].input_ids + [pad_id] * (width - len(rows[i].input_ids)) for i in chunk])
            labels = torch.tensor([rows[i].labels + [IGNORE_INDEX] * (width - len(rows[i].labels)) for i in chunk])
            mask = torch.tensor([[1] * len(rows[i].input_ids) + [0] * (width - len(rows[i].input_ids)) for i in chunk])
            sums, counts = _label_logprobs(model, ids.to(device), mask.to(device), labels.to(device))
            out[chunk, 0] = sums.cpu().numpy()
            out[chunk, 1] = counts.cpu().numpy()
            bar.update(len(chunk))
    return out


def _label_logprobs(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = keep.nonzero()[:, 0]
    y = targets[keep]
    parts = label_only_parts(model)
    if isinstance(parts, tuple):
        backbone, head = parts
        hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False)[0][:, :-1][keep]
        picked = (
            torch.cat(
                [
                    torch.log_softmax(head(hidden[s : s + PROJECT_CHUNK]).float(), dim=-1)
                    .gather(-1, y[s : s + PROJECT_CHUNK, None])
                    .squeeze(-1)
                    for s in range(0, len(y), PROJECT_CHUNK)
                ]
            )
            if len(y)
            else hidden.new_zeros(0, dtype=torch.float32)
        )
    else:  # prompt learning: virtual tokens in front, so the full forward (its outputs' last positions are ours)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -ids.size(1) :]
        picked = torch.log_softmax(logits[:, :-1].float(), dim=-1)[keep].gather(-1, y[:, None]).squeeze(-1)
    sums = torch.zeros(ids.size(0), dtype=torch.float64, device=ids.device).index_add_(0, rows, picked.double())
    return sums, keep.sum(dim=1)


def continuation_logprobs(lm: LM, pairs: Sequence[tuple[list[int], list[int]]], desc: str) -> np.ndarray:
    """log P(continuation | context) of each pair, `lm.batch_size` pairs a call: LM batches by context, and the
    candidates of a canary all share one, so larger calls would put every candidate in one forward pass."""
    out = np.zeros(len(pairs))
    with progress_bar(len(pairs), desc, unit="candidate") as bar:
        for start in range(0, len(pairs), lm.batch_size):
            chunk = pairs[start : start + lm.batch_size]
            out[start : start + len(chunk)] = [s.logprob for s in lm.loglikelihoods(chunk)]
            bar.update(len(chunk))
    return out


__all__ = ["continuation_logprobs", "sample_logprobs"]
