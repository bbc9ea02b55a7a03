"""Batched model calls for evaluation: log-likelihood of continuations, and greedy generation.

Both take token ids rendered by the tasks (through `render_prompt`, the function training uses), sort the
work by length so a batch wastes little on padding, and return results in the input order.

Log-likelihood runs each distinct context once (left-padded, keeping only its last logits) and then the
continuations that share it from its KV cache: the choices of a multiple-choice question cost one pass over
the question. Explicit position ids keep left padding exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tuneforge.inference import GenerationParams, prompt_learning
from tuneforge.inference.prompt_learning import lead_in
from tuneforge.utils.progress import progress_bar


@dataclass(frozen=True)
class Scored:
    logprob: float  # sum of the continuation tokens' log-probabilities
    tokens: int


class LM:
    def __init__(
        self, model: Any, tokenizer: Any, batch_size: int = 8, progress: bool = True, tool_format: str = "auto"
    ) -> None:
        self.tool_format = tool_format  # how tool prompts are rendered: the evaluated run's data.tool_format
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        limit = getattr(model.config, "max_position_embeddings", None)
        self.max_length = int(limit) if isinstance(limit, int) and limit > 0 else 2048
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of a plain-text (context, continuation), split as lm-evaluation-harness does: the whole
        text is encoded once and the continuation is what follows the context's own tokens, so a word is
        tokenised as it would be in running text; spaces ending the context move to the continuation."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = self.encode(context)
        return ctx, self.encode(context + continuation)[len(ctx) :]

    def _bar(self, total: int, desc: str) -> Any:
        return progress_bar(total, desc, unit="seq", enabled=self.progress)

    @torch.inference_mode()
    def loglikelihoods(self, pairs: Sequence[tuple[list[int], list[int]]], desc: str = "") -> list[Scored]:
        """log P(continuation | context) for each (context ids, continuation ids) pair.

        Pairs that share a context (the choices of one question) are grouped: the context runs once, and its
        continuations are scored from its KV cache, so a 4-choice question costs one context, not four.
        """
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            if not ctx or not cont:
                raise ValueError("log-likelihood needs a non-empty context and continuation")
            groups.setdefault(tuple(ctx), []).append(i)
        out: list[Scored] = [Scored(0.0, 0)] * len(pairs)
        # A context shared by many continuations (CrowS-Pairs: every sentence after the same one-token prefix)
        # is cut into units of batch_size continuations, so one forward pass never scores them all at once.
        units = [
            (ctx, members[k : k + self.batch_size])
            for ctx, members in groups.items()
            for k in range(0, len(members), self.batch_size)
        ]
        units.sort(key=lambda u: -len(u[0]))
        with self._bar(len(pairs), desc) as bar:
            for start in range(0, len(units), self.batch_size):
                chunk = units[start : start + self.batch_size]
                scores = self._score_groups([(list(c), [pairs[i][1] for i in members]) for c, members in chunk])
                for i, s in zip([i for _, members in chunk for i in members], scores, strict=True):
                    out[i] = s
                bar.update(len(scores))
        return out

    def _score_groups(self, groups: list[tuple[list[int], list[list[int]]]]) -> list[Scored]:
        # 1) every context once, left-padded: the cache, and the logits that predict each first answer token
        longest = [max(len(c) for c in conts) for _, conts in groups]
        ctxs = [ctx[-max(1, self.max_length - n) :] for (ctx, _), n in zip(groups, longest, strict=True)]
        width = max(len(c) for c in ctxs)
        ids = torch.tensor([[self.pad_id] * (width - len(c)) + c for c in ctxs])
        # a prompt-learning adapter's virtual tokens go in front of each context once, and both passes run on the
        # base model: PeftModel.forward would put them again before the continuation (inference.prompt_learning)
        lead = lead_in(self.model)
        inputs, ctx_mask = lead.prefill(ids, torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in ctxs]))
        first = lead(**inputs, use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(first.logits[:, -1, :].float(), dim=-1)
        rows = [(g, cont[: self.max_length]) for g, (_, conts) in enumerate(groups) for cont in conts]
        scores = [float(first_logp[g, cont[0]]) for g, cont in rows]
        # 2) the rest of every continuation, right-padded, on its context's cache
        rest_width = max(len(cont) - 1 for _, cont in rows)
        if rest_width > 0:
            index = torch.tensor([g for g, _ in rows])
            # transformers >= 5.24 names the cache `cache` (past_key_values is deprecated); older 5.x: past_key_values
            cache = first.cache if hasattr(first, "cache") else first.past_key_values
            cache.batch_select_indices(index)
            rest = [cont[:-1] + [self.pad_id] * (rest_width - len(cont) + 1) for _, cont in rows]
            rest_mask = torch.tensor([[1] * (len(cont) - 1) + [0] * (rest_width - len(cont) + 1) for _, cont in rows])
            lengths = ctx_mask.sum(-1)[index]  # the tokens before each continuation, virtual ones included
            logits = lead(
                input_ids=torch.tensor(rest),
                attention_mask=torch.cat([ctx_mask[index], rest_mask], dim=1),
                position_ids=lengths[:, None] + torch.arange(rest_width)[None, :],
                cache=cache,
                use_cache=True,
            ).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for r, (_, cont) in enumerate(rows):
                if len(cont) > 1:
                    targets = torch.tensor(cont[1:])
                    scores[r] += float(logp[r, : len(cont) - 1].gather(-1, targets[:, None]).sum())
        return [Scored(s, len(cont)) for s, (_, cont) in zip(scores, rows, strict=True)]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, desc: str = "") -> list[str]:
        """Greedy completions of each prompt, decoded without special tokens, in input order."""
        kwargs = GenerationParams(max_new_tokens=max_new_tokens).kwargs(self.tokenizer)
        kwargs["pad_token_id"] = self.pad_id
        room = max(1, self.max_length - max_new_tokens)  # keep the prompt's end when it must be cut
        out: list[str] = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        with self._bar(len(prompts), desc) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                rows = [list(prompts[i])[-room:] for i in chunk]
                width = max(len(r) for r in rows)
                ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows])
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
                gen = prompt_learning.generate(self.model, ids, mask, **kwargs)
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
