"""Reward modelling: a sequence-classification head (one score) trained so chosen scores above rejected.

TRL's RewardTrainer (Bradley-Terry loss) on the preference pairs; the evaluation reports pairwise accuracy
on the validation split. The new `score` head always trains: adapter methods save it with the adapter
(PEFT `modules_to_save`), so the adapter folder loads as a complete reward model. Held-out pairs
(`data.test_datasets`, else the validation split) are scored by the head before (freshly initialised) and
after training: pairwise accuracy and score margin, in preference_eval.json.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from transformers import AutoModelForSequenceClassification, TrainerCallback
from trl import RewardConfig, RewardTrainer

from tuneforge.config import RunConfig
from tuneforge.data.preference import build_preference
from tuneforge.stages.common import RunResult, training_arguments
from tuneforge.stages.preference_eval import held_out_pairs, measure, report
from tuneforge.stages.skeleton import build_trainer, finish, load_trainable, prepare, train, with_saved_modules

log = logging.getLogger("tuneforge.train")
HEAD = "score"  # the head transformers' *ForSequenceClassification models add
CANNOT_SAVE_HEAD = (
    f"stage rm trains a new {HEAD!r} head, but method {{method!r}} saves only its adapter and has no "
    "modules_to_save to keep the head; use lora (or a LoRA variant), full or freeze"
)


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    # prepare; before anything loads, a method that cannot save the head fails
    cfg = cfg.model_copy(update={"method": with_saved_modules(cfg.method, [HEAD], CANNOT_SAVE_HEAD)})
    job = prepare(cfg)
    data = build_preference(cfg.data, "pairs")
    log.info("data: %d train / %d validation pairs", len(data.train), data.stats["val"])
    held = held_out_pairs(cfg, job.tokenizer, data.val)
    run_dir = job.open_run(data.stats)

    def read_last_token(model: Any) -> None:  # the head reads the last non-pad token
        model.config.pad_token_id = job.tokenizer.pad_token_id

    model, counts = load_trainable(job, AutoModelForSequenceClassification, before_method=read_last_token, num_labels=1)
    for name, param in model.named_parameters():
        if f"{HEAD}." in name and "original_module" not in name:
            param.requires_grad_(True)  # full/freeze/bitfit…: the fresh head must learn whatever else is frozen

    # build trainer
    args: Any = training_arguments(
        cfg,
        run_dir,
        data.val is not None,
        RewardConfig,
        max_length=cfg.data.cutoff_len,
        center_rewards_coefficient=cfg.rm.center_rewards,
        train_sampling_strategy="random",  # TRL tokenizes inside the trainer: no lengths to group by up front
    )
    trainer = build_trainer(RewardTrainer, job, model, args, data.train, data.val, callbacks)

    # train, finish
    before = measure(trainer.model, held, "reward", cfg, job.tokenizer) if held else None
    output = train(job, trainer)
    result = finish(job, trainer, output, counts, data.stats)
    if held and before:
        after = measure(trainer.model, held, "reward", cfg, job.tokenizer)  # every rank: a sharded model's forward
        if run_dir.writes:  # rank 0 writes the run folder
            report(run_dir.root, held, "reward", before, after)
    return result
