"""Batched model calls for evaluation: log-likelihood of continuations, and greedy generation.

Both take token ids rendered by the tasks (through `render_prompt`, the function training uses), sort the
work by length so a batch wastes little on padding, and return results in the input order.

Log-likelihood batches are left-padded, so every continuation ends at the last position and the model only
has to produce logits for the last few positions (`logits_to_keep`): a batch of 8 x 500 tokens would
otherwise materialise 8 x 500 x 49k float logits. Explicit position ids keep left padding exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.serve.engine import GenerationParams


@dataclass(frozen=True)
class Scored:
    logprob: float  # sum of the continuation tokens' log-probabilities
    tokens: int


class LM:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, progress: bool = True) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = int(limit) if isinstance(limit, int) and limit > 0 else 2048
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False, unit="seq")

    @torch.inference_mode()
    def loglikelihoods(self, pairs: Sequence[tuple[list[int], list[int]]], desc: str = "") -> list[Scored]:
        """log P(continuation | context) for each (context ids, continuation ids) pair."""
        seqs = []
        for ctx, cont in pairs:
            if not cont:
                raise ValueError("an empty continuation has no likelihood to score")
            full = (ctx + cont)[-(self.max_length + 1) :]  # keep the end: the continuation must fit
            seqs.append((full, min(len(cont), len(full) - 1)))
        out: list[Scored | None] = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
        with self._bar(len(seqs), desc) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                for i, s in zip(chunk, self._score_batch([seqs[i] for i in chunk]), strict=True):
                    out[i] = s
                bar.update(len(chunk))
        return [s for s in out if s is not None]

    def _score_batch(self, batch: list[tuple[list[int], int]]) -> list[Scored]:
        inputs = [seq[:-1] for seq, _ in batch]  # the last token is only ever a target
        width = max(len(x) for x in inputs)
        ids = torch.tensor([[self.pad_id] * (width - len(x)) + x for x in inputs])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in inputs])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(n for _, n in batch)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits[
            :, -keep:, :
        ]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, (seq, n) in enumerate(batch):
            targets = torch.tensor(seq[-n:])
            picked = logprobs[row, keep - n :, :].gather(-1, targets[:, None]).squeeze(-1)
            scores.append(Scored(float(picked.sum()), n))
        return scores

    @torch.inference_mode()
    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, desc: str = "") -> list[str]:
        """Greedy completions of each prompt, decoded without special tokens, in input order."""
        kwargs = GenerationParams(max_new_tokens=max_new_tokens).kwargs(self.tokenizer)
        kwargs["pad_token_id"] = self.pad_id
        room = self.max_length - max_new_tokens
        out: list[str] = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        with self._bar(len(prompts), desc) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                rows = [list(prompts[i])[-room:] for i in chunk]
                width = max(len(r) for r in rows)
                ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows])
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
                gen = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
                for i, row in zip(chunk, gen, strict=True):
                    out[i] = self.tokenizer.decode(row[width:], skip_special_tokens=True).strip()
                bar.update(len(chunk))
        return out

    def rolling_windows(self, ids: list[int], window: int) -> list[tuple[list[int], list[int]]]:
        """(context, targets) pairs covering every token after the first once, each with up to window/2
        tokens of preceding context (HF's strided perplexity), for texts longer than the window."""
        window = min(window, self.max_length)
        stride = max(1, window // 2)
        pairs = []
        for start in range(1, len(ids), stride):
            ctx = ids[max(0, start - (window - stride)) : start]
            pairs.append((ctx, ids[start : start + stride]))
        return pairs


__all__ = ["LM", "Scored"]
