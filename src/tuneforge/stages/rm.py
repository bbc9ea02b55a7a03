"""Reward modelling: a sequence-classification head (one score) trained so chosen scores above rejected.

TRL's RewardTrainer (Bradley-Terry loss) on the preference pairs; the evaluation reports pairwise accuracy
on the validation split. The new `score` head always trains: adapter methods save it with the adapter
(PEFT `modules_to_save`), so the adapter folder loads as a complete reward model. Held-out pairs
(`data.test_datasets`, else the validation split) are scored by the head before (freshly initialised) and
after training: pairwise accuracy and score margin, in preference_eval.json.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from transformers import AutoModelForSequenceClassification, TrainerCallback, set_seed
from trl import RewardConfig, RewardTrainer

from tuneforge.config import MethodSection, RunConfig
from tuneforge.data.preference import build_preference
from tuneforge.methods import METHODS, MethodError, model_load_kwargs
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.runs import check_run_available, open_run
from tuneforge.stages.common import RunResult, set_threads, training_arguments
from tuneforge.stages.preference_eval import held_out_pairs, measure, report
from tuneforge.stages.trl_common import optimizers, prepare_model, stage_callbacks, train_and_save

log = logging.getLogger("tuneforge.train")
HEAD = "score"  # the head transformers' *ForSequenceClassification models add


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    started = time.perf_counter()
    method = with_trained_head(cfg.method)  # before anything loads: a method that cannot save the head fails
    cfg = cfg.model_copy(update={"method": method})
    check_run_available(cfg)
    threads = set_threads(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_preference(cfg.data, "pairs")
    log.info("data: %d train / %d validation pairs", len(data.train), data.stats["val"])
    held = held_out_pairs(cfg, tokenizer, data.val)
    run_dir = open_run(cfg)
    (run_dir.root / "data_stats.json").write_text(json.dumps(data.stats, indent=2), encoding="utf-8")

    set_seed(cfg.train.seed)
    model = load_model(
        cfg.model, tokenizer, AutoModelForSequenceClassification, num_labels=1, **model_load_kwargs(cfg.method)
    )
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    model, trainable, total = prepare_model(model, cfg, threads)
    for name, param in model.named_parameters():
        if f"{HEAD}." in name and "original_module" not in name:
            param.requires_grad_(True)  # full/freeze/bitfit…: the fresh head must learn whatever else is frozen
    args: Any = training_arguments(
        cfg,
        run_dir,
        data.val is not None,
        RewardConfig,
        max_length=cfg.data.cutoff_len,
        center_rewards_coefficient=cfg.rm.center_rewards,
        train_sampling_strategy="random",  # TRL tokenizes inside the trainer: no lengths to group by up front
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.val,
        processing_class=tokenizer,
        callbacks=stage_callbacks(model, cfg, run_dir, callbacks),
        optimizers=optimizers(model, cfg, args),
    )
    before = measure(trainer.model, held, "reward", cfg, tokenizer) if held else None
    result = train_and_save(cfg, run_dir, trainer, tokenizer, (trainable, total), started, data.stats)
    if held and before:
        report(run_dir.root, held, "reward", before, measure(trainer.model, held, "reward", cfg, tokenizer))
    return result


def with_trained_head(params: MethodSection) -> Any:
    """`params` with the score head added to what an adapter saves; a method that cannot save it is refused."""
    if METHODS[params.name].output == "model":
        return params  # the whole model is saved, head included
    if "modules_to_save" not in type(params).model_fields:
        raise MethodError(
            f"stage rm trains a new {HEAD!r} head, but method {params.name!r} saves only its adapter and has no "
            "modules_to_save to keep the head; use lora (or a LoRA variant), full or freeze"
        )
    modules = list(params.modules_to_save)  # type: ignore[attr-defined]  # checked just above
    return params if HEAD in modules else params.model_copy(update={"modules_to_save": [*modules, HEAD]})
