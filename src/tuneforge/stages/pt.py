"""Continued pre-training: plain text packed into `cutoff_len` blocks, every token trained on.

Documents are tokenised whole (+ EOS), concatenated and cut into blocks of `data.cutoff_len` tokens (the last
partial block is dropped), as LLaMA-Factory and the HF run_clm recipe do. Perplexity on the held-out split
(`data.val_size`) is measured before and after training and written to result.json / pt_perplexity.json.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, default_data_collator

from tuneforge.config import RunConfig
from tuneforge.data.build import build_text
from tuneforge.data.schema import DataError
from tuneforge.models.loader import load_tokenizer
from tuneforge.models.vocab import init_new_embeddings, learn_tokens, tokens_per_char
from tuneforge.stages.common import RunResult, training_arguments
from tuneforge.stages.skeleton import (
    build_trainer,
    finish,
    load_trainable,
    prepare,
    privacy_arguments,
    privacy_kwargs,
    privacy_plan,
    private,
    train,
    with_saved_modules,
)

log = logging.getLogger("tuneforge.train")
EMBEDDINGS = ["embed_tokens", "lm_head"]  # Llama-style names; check_saved_modules names what a model lacks
CANNOT_SAVE_EMBEDDINGS = (
    "vocab.corpus adds tokens whose embeddings must train, but method {method!r} cannot save them "
    "(no modules_to_save); use lora (or a LoRA variant), full or freeze"
)
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
    # prepare
    if cfg.vocab.corpus:  # before anything loads: the method must be able to train and save the embeddings
        cfg = cfg.model_copy(update={"method": with_saved_modules(cfg.method, EMBEDDINGS, CANNOT_SAVE_EMBEDDINGS)})
    job = prepare(cfg)
    vocab: dict[str, Any] = {}
    if cfg.vocab.corpus:
        job.tokenizer, vocab = extend_vocabulary(cfg, job.tokenizer)
    dp = cfg.privacy if cfg.privacy.enabled else None
    whole = cfg.data.model_copy(update={"cutoff_len": WHOLE})
    text = build_text(whole, job.tokenizer, dp.unit if dp else None, dp.user_column if dp else None)
    # DP-SGD: a packed block would mix documents and one document would span blocks, so each document is cut into
    # rows of its own (one privacy unit, or its user's); otherwise documents are packed into full blocks.
    train_data = document_rows(text.train, cfg.data.cutoff_len) if dp else pack_blocks(text.train, cfg.data.cutoff_len)
    val = pack_blocks(text.val, cfg.data.cutoff_len) if text.val is not None else None
    stats: dict[str, Any] = {**text.stats, "train_blocks": len(train_data), "val_blocks": len(val) if val else 0}
    log.info(
        "data: %d train %s / %d validation blocks of %d tokens",
        len(train_data),
        "rows (documents cut, not packed: privacy)" if dp else "blocks",
        stats["val_blocks"],
        cfg.data.cutoff_len,
    )
    plan = privacy_plan(job, train_data)
    run_dir = job.open_run(None)  # data_stats.json at the end, with the perplexities and the vocabulary
    if text.canaries is not None:  # data.canaries: the secrets inserted, for `tuneforge audit`
        run_dir.write_json(run_dir.canaries, text.canaries)

    def new_rows(model: Any) -> None:  # the added tokens' embeddings start from their pieces' mean
        init_new_embeddings(model, load_tokenizer(cfg.model), vocab["added"], job.tokenizer)

    model, counts = load_trainable(job, before_method=new_rows if vocab else None)
    if vocab:
        stats["vocab"] = {k: v for k, v in vocab.items() if k != "added"} | {"added": len(vocab["added"])}

    # build trainer
    args = training_arguments(
        cfg, run_dir, val is not None, train_sampling_strategy="random", **privacy_arguments(plan)
    )
    collator = DataCollatorForSeq2Seq(job.tokenizer, padding=True, label_pad_token_id=-100) if dp else None
    trainer = build_trainer(
        private(Trainer, plan),
        job,
        model,
        args,
        train_data,
        val,
        callbacks,
        data_collator=collator or default_data_collator,
        **privacy_kwargs(job, plan),
    )

    # train, finish
    before = perplexity(trainer) if val is not None else None
    output = train(job, trainer)
    result = finish(job, trainer, output, counts, stats)
    after = perplexity(trainer) if val is not None else None
    if before is not None and after is not None:
        log.info("held-out perplexity: %.3f before, %.3f after", before, after)
        figures = {"perplexity_before": before, "perplexity_after": after}
        run_dir.write_json(run_dir.root / "pt_perplexity.json", figures)
        result.data_stats.update(figures)
    if vocab and run_dir.writes:  # rank 0 writes the run folder
        save_merged(trainer.model, job.tokenizer, run_dir.merged)
        (run_dir.root / "vocab.json").write_text(json.dumps(vocab, indent=2, ensure_ascii=False), encoding="utf-8")
    run_dir.write_json(run_dir.data_stats, result.data_stats)
    return result


def document_rows(ds: Dataset, block: int) -> Dataset:
    """Each document's ids cut into rows of at most `block` tokens (the last one shorter, padded by the collator),
    every row keeping its document's privacy unit; rows of fewer than 2 tokens predict nothing and are dropped."""
    ids: list[list[int]] = []
    units: list[str] = []
    for row, unit in zip(ds["input_ids"], ds["unit"], strict=True):
        for start in range(0, len(row), block):
            piece = row[start : start + block]
            if len(piece) >= 2:
                ids.append(piece)
                units.append(unit)
    if not ids:
        raise DataError("no document has 2 tokens or more: nothing to train on")
    return Dataset.from_dict(
        {"input_ids": ids, "labels": ids, "attention_mask": [[1] * len(r) for r in ids], "unit": units}
    )


def extend_vocabulary(cfg: RunConfig, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """Learn tokens on 90% of the corpus lines; tokens per character measured on the held-out 10%."""
    lines = [x for x in Path(str(cfg.vocab.corpus)).read_text(encoding="utf-8").splitlines() if x.strip()]
    cut = max(1, len(lines) * 9 // 10)
    learn, held = lines[:cut], lines[cut:] or lines[-1:]
    before = tokens_per_char(tokenizer, held)
    added = learn_tokens(tokenizer, learn, cfg.vocab.new_tokens, cfg.vocab.min_frequency)
    tokenizer.add_tokens(added)
    after = tokens_per_char(tokenizer, held)
    log.info("vocabulary: +%d tokens; tokens per character on held-out text %.4f -> %.4f", len(added), before, after)
    return tokenizer, {"tokens_per_char_before": before, "tokens_per_char_after": after, "added": added}


def save_merged(model: Any, tokenizer: Any, folder: Path) -> None:
    """A plain transformers folder (model + extended tokenizer): the adapter merged into the base."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def perplexity(trainer: Trainer) -> float:
    loss = trainer.evaluate(metric_key_prefix="ppl")["ppl_loss"]
    return round(math.exp(loss), 4)
