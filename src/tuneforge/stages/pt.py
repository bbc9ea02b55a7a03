"""Continued pre-training: plain text packed into `cutoff_len` blocks, every token trained on.

Documents are tokenised whole (+ EOS), concatenated and cut into blocks of `data.cutoff_len` tokens (the last
partial block is dropped), as LLaMA-Factory and the HF run_clm recipe do. Perplexity on the held-out split
(`data.val_size`) is measured before and after training and written to result.json / pt_perplexity.json.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from datasets import Dataset
from transformers import Trainer, TrainerCallback, default_data_collator, set_seed

from tuneforge.config import RunConfig
from tuneforge.data.build import build_text
from tuneforge.data.schema import DataError
from tuneforge.methods import model_load_kwargs
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.runs import check_run_available, open_run
from tuneforge.stages.common import RunResult, set_threads, training_arguments
from tuneforge.stages.trl_common import optimizers, prepare_model, stage_callbacks, train_and_save

log = logging.getLogger("tuneforge.train")
WHOLE = 10**9  # cutoff for reading: documents are cut into blocks after concatenation, never truncated


def pack_blocks(ds: Dataset, block: int) -> Dataset:
    """Concatenate every document's ids and cut them into `block`-token rows; the remainder is dropped."""
    ids = [t for row in ds["input_ids"] for t in row]
    n = len(ids) // block
    if n == 0:
        raise DataError(f"the text holds {len(ids)} tokens, fewer than one block of data.cutoff_len={block}")
    rows = [ids[i * block : (i + 1) * block] for i in range(n)]
    # labels = ids: blocks are full, so no padding; a collator masking pad ids would also mask EOS when pad == EOS
    return Dataset.from_dict({"input_ids": rows, "labels": rows, "attention_mask": [[1] * block for _ in rows]})


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    started = time.perf_counter()
    check_run_available(cfg)
    threads = set_threads(cfg)
    tokenizer = load_tokenizer(cfg.model)
    text = build_text(cfg.data.model_copy(update={"cutoff_len": WHOLE}), tokenizer)
    train = pack_blocks(text.train, cfg.data.cutoff_len)
    val = pack_blocks(text.val, cfg.data.cutoff_len) if text.val is not None else None
    stats: dict[str, Any] = {**text.stats, "train_blocks": len(train), "val_blocks": len(val) if val else 0}
    log.info("data: %d train / %d validation blocks of %d tokens", len(train), stats["val_blocks"], cfg.data.cutoff_len)
    run_dir = open_run(cfg)

    set_seed(cfg.train.seed)
    model = load_model(cfg.model, tokenizer, **model_load_kwargs(cfg.method))
    model, trainable, total = prepare_model(model, cfg, threads)
    args = training_arguments(cfg, run_dir, val is not None, train_sampling_strategy="random")
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=stage_callbacks(model, cfg, run_dir, callbacks),
        optimizers=optimizers(model, cfg, args),
    )
    before = perplexity(trainer) if val is not None else None
    result = train_and_save(cfg, run_dir, trainer, tokenizer, (trainable, total), started, stats)
    after = perplexity(trainer) if val is not None else None
    if before is not None and after is not None:
        log.info("held-out perplexity: %.3f before, %.3f after", before, after)
        figures = {"perplexity_before": before, "perplexity_after": after}
        (run_dir.root / "pt_perplexity.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
        result.data_stats.update(figures)
    (run_dir.root / "data_stats.json").write_text(json.dumps(result.data_stats, indent=2), encoding="utf-8")
    return result


def perplexity(trainer: Trainer) -> float:
    loss = trainer.evaluate(metric_key_prefix="ppl")["ppl_loss"]
    return round(math.exp(loss), 4)
