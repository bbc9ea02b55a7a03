"""Preference optimisation on chosen/rejected pairs: DPO and its loss variants, ORPO and SimPO.

sigmoid/ipo/hinge/robust run on TRL's DPOTrainer against a reference model. With an adapter method the
reference is the adapter-free base: TRL keeps a frozen copy of the freshly initialised adapter (for LoRA,
zero-initialised B, so exactly the base) instead of a second model. With full/freeze training TRL keeps a
frozen copy of the model. orpo and simpo are reference-free (TRL's ORPOTrainer / CPOTrainer).
Held-out pairs (`data.test_datasets`, else the validation split) are scored before and after training:
preference accuracy, log-prob margin and the implicit reward margin, in preference_eval.json.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from tuneforge.config import RunConfig
from tuneforge.data.preference import build_preference
from tuneforge.stages.common import RunResult, training_arguments
from tuneforge.stages.preference_eval import held_out_pairs, measure, report
from tuneforge.stages.skeleton import build_trainer, drop_reference_adapter, finish, load_trainable, prepare, train

log = logging.getLogger("tuneforge.train")


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    # prepare: data errors surface before the model loads
    job = prepare(cfg)
    data = build_preference(cfg.data, "pairs")
    log.info("data: %d train / %d validation pairs", len(data.train), len(data.val) if data.val else 0)
    held = held_out_pairs(cfg, job.tokenizer, data.val)
    run_dir = job.open_run(data.stats)
    model, counts = load_trainable(job)

    # build trainer
    trainer_cls, args = trainer_and_args(cfg, run_dir, has_eval=data.val is not None)
    trainer = build_trainer(trainer_cls, job, model, args, data.train, data.val, callbacks)

    # train, finish
    before = measure(trainer.model, held, "logprob", cfg, job.tokenizer) if held else None
    output = train(job, trainer)
    result = finish(job, trainer, output, counts, data.stats, before_save=drop_reference_adapter)
    if held and before:
        after = measure(trainer.model, held, "logprob", cfg, job.tokenizer)
        if run_dir.writes:  # rank 0 writes the run folder
            report(run_dir.root, held, "logprob", before, after, beta=cfg.dpo.beta)
    return result


def trainer_and_args(cfg: RunConfig, run_dir: Any, has_eval: bool) -> tuple[Any, Any]:
    """The TRL trainer class and its config for `dpo.loss` (the one builder of TRL preference configs)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    d = cfg.dpo
    # TRL tokenizes inside the trainer, so length grouping (which needs input_ids up front) is not available.
    common: dict[str, Any] = {
        "max_length": cfg.data.cutoff_len,
        "beta": d.beta,
        "train_sampling_strategy": "random",
    }
    if d.loss == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer, training_arguments(cfg, run_dir, has_eval, ORPOConfig, **common)
    if d.loss == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        simpo = {"loss_type": "simpo", "cpo_alpha": d.ftx, "simpo_gamma": d.simpo_gamma}
        return CPOTrainer, training_arguments(cfg, run_dir, has_eval, CPOConfig, **common, **simpo)
    from trl import DPOConfig, DPOTrainer

    losses: list[str] = [d.loss]
    weights = [1.0]
    if d.ftx:
        losses, weights = [d.loss, "sft"], [1.0, d.ftx]
    extra = {"loss_type": losses, "loss_weights": weights, "label_smoothing": d.label_smoothing}
    return DPOTrainer, training_arguments(cfg, run_dir, has_eval, DPOConfig, **common, **extra)
