"""Supervised fine-tuning: chat data rendered through the model's own template, loss on assistant turns only.

The stage's steps are skeleton.py's (prepare → build trainer → train → finish); its trainer, with the
label-only loss, is in sft_trainer.py. The speed levers (docs/speed.md) each have one switch in the config:
data.packing + data.packing_row_tokens, train.label_only_logits, train.onednn_fp32, train.bf16_autocast,
train.group_by_length, train.gradient_checkpointing, train.threads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, TrainerCallback

from tuneforge.config import RunConfig
from tuneforge.data.build import build_sft
from tuneforge.data.collate import PackedRowsCollator, pad_id
from tuneforge.methods import METHODS
from tuneforge.stages.common import RunResult, cpu_settings, training_arguments
from tuneforge.stages.sft_trainer import CHECK_RTOL, SFTTrainer
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
)

log = logging.getLogger("tuneforge.train")

# The start-up check of data.packing: this many training samples in one row vs padded.
PACK_CHECK_SAMPLES = 4


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    # prepare: data first, so every data error surfaces before the (slow) model load
    job = prepare(cfg)
    cpu = cpu_settings(cfg)
    dp = cfg.privacy if cfg.privacy.enabled else None
    data = build_sft(cfg.data, job.tokenizer, dp.unit if dp else None, dp.user_column if dp else None)
    log.info(
        "data: %d train / %d validation samples, %d label tokens",
        len(data.train),
        len(data.val) if data.val is not None else 0,
        data.stats.get("label_tokens", 0),
    )
    plan = privacy_plan(job, data.train)  # DP-SGD (privacy:), decided before the model loads; None without
    run_dir = job.open_run(data.stats)
    if data.canaries is not None:  # data.canaries: the secrets inserted, for `tuneforge audit`
        run_dir.write_json(run_dir.canaries, data.canaries)
    model, counts = load_trainable(job)

    # Padding-free rows (data.packing): position ids restart per sample, and transformers' masking detects the
    # boundaries so no attention crosses samples; rows are capped (data.packing_row_tokens), see data/collate.py.
    # Checked once on this model and method; where packed rows would change the loss, batches are padded.
    if cfg.data.packing:
        why = packing_refusal(cfg, model, job.tokenizer, data.train)
        if why is not None:
            log.warning("data.packing: not applied (%s); padded batches instead", why)
            cfg = job.cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"packing": False})})
        cpu["packing"] = why or "used"
    run_dir.write_json(run_dir.cpu, cpu)

    # build trainer
    args = training_arguments(
        cfg, run_dir, has_eval=data.val is not None, label_names=["labels"], **privacy_arguments(plan)
    )
    trainer = build_trainer(
        private(SFTTrainer, plan),
        job,
        model,
        args,
        data.train,
        data.val,
        callbacks,
        data_collator=sft_collator(cfg, job.tokenizer),
        label_only_logits=cfg.train.label_only_logits,
        **privacy_kwargs(job, plan),
    )
    # train, finish
    output = train(job, trainer)
    return finish(job, trainer, output, counts, data.stats)


def sft_collator(cfg: RunConfig, tokenizer: Any) -> PackedRowsCollator | DataCollatorForSeq2Seq:
    if cfg.data.packing:
        return PackedRowsCollator(cfg.data.packing_row_tokens or cfg.data.cutoff_len, pad_id(tokenizer))
    return padded_collator(tokenizer)


def padded_collator(tokenizer: Any) -> DataCollatorForSeq2Seq:
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def packing_refusal(cfg: RunConfig, model: Any, tokenizer: Any, samples: Any) -> str | None:
    """Why this run must not pack its batches (None: packing keeps the loss), decided once before training.

    Prompt-learning methods by their family in the method table: their virtual tokens sit in front of the row,
    so packed samples, whose positions restart, would not see them (the loss check cannot tell at
    initialisation, when the virtual tokens barely matter). Every other model and method by packing_mismatch.
    """
    if METHODS[cfg.method.name].family == "prompt":
        return (
            f"{cfg.method.name} is prompt learning: packed samples restart their positions and would not see the "
            "virtual tokens in front of the row"
        )
    return packing_mismatch(model, tokenizer, samples)


def packing_mismatch(model: Any, tokenizer: Any, samples: Any) -> str | None:
    """Why padding-free rows would change this model's loss (None: they do not), checked once before training.

    Up to PACK_CHECK_SAMPLES training samples are put side by side in ONE row and the model's own loss on it is
    compared with the loss of the same samples as a padded batch (eval mode, no dropout). A model or method
    that lets packed samples attend to each other (custom modelling code that ignores restarting position ids,
    prompt-learning methods whose virtual tokens sit in front of the row) fails the check and trains padded.
    """
    n = min(len(samples), PACK_CHECK_SAMPLES)
    features = [samples[i] for i in range(n)]
    features = [f for f in features if any(x != -100 for x in list(f["labels"])[1:])]
    if len(features) < 2:
        return None  # nothing that could attend across samples
    packed = PackedRowsCollator(sum(len(f["input_ids"]) for f in features), pad_id(tokenizer))
    padded = padded_collator(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            one_row = float(model(**packed.pack(features, [list(range(len(features)))]), use_cache=False).loss)
            plain = float(model(**padded(features), use_cache=False).loss)
    except Exception as e:  # a model that refuses position ids or the layout
        return f"the model failed on a packed row: {type(e).__name__}: {e}"
    finally:
        model.train(was_training)
    if not math.isfinite(one_row) or not math.isclose(one_row, plain, rel_tol=CHECK_RTOL):
        return f"loss on {len(features)} samples in one row {one_row:.6f} differs from padded {plain:.6f}"
    return None
