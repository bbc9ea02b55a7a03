"""Supervised fine-tuning: chat data rendered through the model's own template, loss on assistant turns only."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from transformers import TrainerCallback, set_seed
from transformers.trainer_callback import ProgressCallback

from tuneforge.config import RunConfig
from tuneforge.data.build import build_sft
from tuneforge.methods import (
    METHODS,
    apply_method,
    build_optimizer,
    count_parameters,
    describe,
    method_callbacks,
    model_load_kwargs,
    save_trained,
)
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.runs import check_run_available, open_run
from tuneforge.stages.callbacks import ReadableProgress, RunMetrics
from tuneforge.stages.common import RunResult, final_losses, prepare_resume, set_threads, training_arguments
from tuneforge.stages.speed import SpeedTrainer, cpu_settings, packing_refusal, sft_collator

log = logging.getLogger("tuneforge.train")


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    started = time.perf_counter()
    check_run_available(cfg)  # before any loading: never overwrite a run, fail fast on resume mistakes
    threads = set_threads(cfg)
    cpu = cpu_settings(cfg)

    # Data first: every data error surfaces before the (slow) model load.
    tokenizer = load_tokenizer(cfg.model)
    data = build_sft(cfg.data, tokenizer)
    log.info(
        "data: %d train / %d validation samples, %d label tokens",
        len(data.train),
        len(data.val) if data.val is not None else 0,
        data.stats.get("label_tokens", 0),
    )

    run_dir = open_run(cfg)
    (run_dir.root / "data_stats.json").write_text(json.dumps(data.stats, indent=2), encoding="utf-8")

    set_seed(cfg.train.seed)  # adapter initialisation (e.g. LoRA A) must not depend on what ran before
    model = load_model(cfg.model, tokenizer, **model_load_kwargs(cfg.method))
    # No KV cache while training: it is useless there, and transformers only detects packed sequences
    # (position ids restarting) when no cache object exists, so with a cache packed samples would attend
    # to each other.
    model.config.use_cache = False
    model = apply_method(model, cfg.method)
    trainable, total = count_parameters(model)
    log.info("%s | %d threads", describe(model, cfg.method), threads)

    # Padding-free rows (data.packing): position ids restart per sample, and transformers' masking detects the
    # boundaries so no attention crosses samples; rows are capped (data.packing_row_tokens), see data/collate.py.
    # Checked once on this model and method; where packed rows would change the loss, batches are padded.
    if cfg.data.packing:
        why = packing_refusal(cfg, model, tokenizer, data.train)
        if why is not None:
            log.warning("data.packing: not applied (%s); padded batches instead", why)
            cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"packing": False})})
        cpu["packing"] = why or "used"
    (run_dir.root / "cpu.json").write_text(json.dumps(cpu, indent=2), encoding="utf-8")
    collator = sft_collator(cfg, tokenizer)

    args = training_arguments(cfg, run_dir, has_eval=data.val is not None, label_names=["labels"])
    trainer = SpeedTrainer(
        label_only_logits=cfg.train.label_only_logits,
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.val,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[
            RunMetrics(run_dir, f"{cfg.name}: {cfg.stage} / {cfg.method.name}"),
            *method_callbacks(model, cfg.method),
            *callbacks,
        ],
        optimizers=(build_optimizer(model, cfg.method, args), None),  # None: the trainer's own default
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ReadableProgress)
    resume_from = prepare_resume(cfg, run_dir)
    output = trainer.train(resume_from_checkpoint=resume_from)
    steps_done = trainer.state.global_step
    if data.val is not None and cfg.train.eval_steps and steps_done % cfg.train.eval_steps:
        trainer.evaluate()  # the last steps fell between evaluation points

    method = METHODS[cfg.method.name]
    target = run_dir.adapter if method.output == "adapter" else run_dir.model
    model.config.use_cache = True  # the saved model generates with a cache
    saved = save_trained(model, cfg.method, target, tokenizer)

    train_loss, eval_loss = final_losses(run_dir.read_metrics())
    runtime = output.metrics.get("train_runtime") or 0.0
    seen = trainer.state.num_input_tokens_seen
    result = RunResult(
        run_dir=run_dir.root,
        output_dir=saved,
        train_loss=train_loss,
        eval_loss=eval_loss,
        steps=trainer.state.global_step,
        seconds=round(time.perf_counter() - started, 2),
        tokens_per_s=round(seen / runtime, 1) if runtime and seen else None,
        trainable_params=trainable,
        total_params=total,
        data_stats=data.stats,
    )
    (run_dir.root / "result.json").write_text(json.dumps(result.summary(), indent=2), encoding="utf-8")
    log.info("saved %s to %s", method.output, saved)
    return result
