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
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import Trainer, TrainerCallback, default_data_collator, set_seed

from tuneforge.config import MethodSection, RunConfig
from tuneforge.data.build import build_text
from tuneforge.data.schema import DataError
from tuneforge.methods import METHODS, MethodError, model_load_kwargs
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.models.vocab import init_new_embeddings, learn_tokens, tokens_per_char
from tuneforge.runs import check_run_available, open_run
from tuneforge.stages.common import RunResult, set_threads, training_arguments
from tuneforge.stages.trl_common import optimizers, prepare_model, stage_callbacks, train_and_save

log = logging.getLogger("tuneforge.train")
EMBEDDINGS = ["embed_tokens", "lm_head"]  # Llama-style names; check_saved_modules names what a model lacks
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
    if cfg.vocab.corpus:  # before anything loads: the method must be able to train and save the embeddings
        cfg = cfg.model_copy(update={"method": with_trained_embeddings(cfg.method)})
    check_run_available(cfg)
    threads = set_threads(cfg)
    tokenizer = load_tokenizer(cfg.model)
    vocab: dict[str, Any] = {}
    if cfg.vocab.corpus:
        tokenizer, vocab = extend_vocabulary(cfg, tokenizer)
    text = build_text(cfg.data.model_copy(update={"cutoff_len": WHOLE}), tokenizer)
    train = pack_blocks(text.train, cfg.data.cutoff_len)
    val = pack_blocks(text.val, cfg.data.cutoff_len) if text.val is not None else None
    stats: dict[str, Any] = {**text.stats, "train_blocks": len(train), "val_blocks": len(val) if val else 0}
    log.info("data: %d train / %d validation blocks of %d tokens", len(train), stats["val_blocks"], cfg.data.cutoff_len)
    run_dir = open_run(cfg)

    set_seed(cfg.train.seed)
    model = load_model(cfg.model, tokenizer, **model_load_kwargs(cfg.method))
    if vocab:
        init_new_embeddings(model, load_tokenizer(cfg.model), vocab["added"], tokenizer)
        stats["vocab"] = {k: v for k, v in vocab.items() if k != "added"} | {"added": len(vocab["added"])}
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
    if vocab:
        save_merged(trainer.model, tokenizer, run_dir.root / "merged")
        (run_dir.root / "vocab.json").write_text(json.dumps(vocab, indent=2, ensure_ascii=False), encoding="utf-8")
    (run_dir.root / "data_stats.json").write_text(json.dumps(result.data_stats, indent=2), encoding="utf-8")
    return result


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


def with_trained_embeddings(params: MethodSection) -> Any:
    """New tokens need trained embedding rows: adapter methods also train (and save) embed_tokens and lm_head."""
    if METHODS[params.name].output == "model":
        return params
    if "modules_to_save" not in type(params).model_fields:
        raise MethodError(
            f"vocab.corpus adds tokens whose embeddings must train, but method {params.name!r} cannot save them "
            "(no modules_to_save); use lora (or a LoRA variant), full or freeze"
        )
    modules = list(params.modules_to_save)  # type: ignore[attr-defined]  # checked just above
    wanted = [m for m in EMBEDDINGS if m not in modules]
    return params.model_copy(update={"modules_to_save": [*modules, *wanted]})


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
