"""The training split as conversations, untokenized: what few-shot prompts draw their solved examples from.

The training split is data.build.load_and_split's, the one that decides what a run trains on (resolve → read →
mix → split, num_samples and max_samples, data.seed, data.val_size, data.scrub), so the pool is the split a run
of the same config trains on, the validation split left out; each distinct sample once, and without the samples
build_sft skips (no assistant token left within data.cutoff_len).
"""

from __future__ import annotations

import logging
from typing import Any

from tuneforge.config import DataConfig
from tuneforge.data.build import load_and_split
from tuneforge.data.render import render_conversation
from tuneforge.data.schema import Conversation, DataError
from tuneforge.data.scrub import scrubber_for

log = logging.getLogger("tuneforge.data")


def train_conversations(cfg: DataConfig, tokenizer: Any) -> list[Conversation]:
    """The distinct samples of the training split, in the mixed order, each a Conversation ending in its answer;
    `tokenizer` (the model's) tells which samples training skips for data.cutoff_len."""
    data = load_and_split(cfg, "sft", scrubber_for(cfg))
    out, skipped = [], 0
    for key in dict.fromkeys(data.train):
        sample = data.sample(key)
        assert isinstance(sample, Conversation)  # an "sft" load makes every sample a Conversation
        if render_conversation(tokenizer, sample, cfg.cutoff_len, cfg.train_on_prompt, cfg.tool_format, cfg.max_tools):
            out.append(sample)
        else:
            skipped += 1
    if skipped:
        log.info("few-shot pool: %d training samples left out, as training skips them (data.cutoff_len)", skipped)
    bad = next((c for c in out if not c.messages or c.messages[-1].role != "assistant"), None)
    if bad is not None:
        raise DataError(f"{bad.source}: a training sample must end with an assistant answer to be a solved example")
    if not out:
        raise DataError(f"no training sample is left within data.cutoff_len={cfg.cutoff_len}; raise data.cutoff_len")
    return out


__all__ = ["train_conversations"]
