"""KTO on unpaired examples, each answer tagged desirable or not (LLaMA-Factory's `kto_tag`), on TRL's KTOTrainer.

The reference is the same as for DPO: with an adapter method, a frozen copy of the freshly initialised
adapter (for LoRA exactly the base model), never a second copy of the model. KTO's examples are unpaired, so
its held-out figures (preference_eval.json) need pairs named in `data.test_datasets`, as for dpo.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from transformers import TrainerCallback

from tuneforge.config import RunConfig
from tuneforge.data.preference import build_preference
from tuneforge.stages.common import RunResult, training_arguments
from tuneforge.stages.preference_eval import held_out_pairs, measure, report
from tuneforge.stages.skeleton import build_trainer, drop_reference_adapter, finish, load_trainable, prepare, train

log = logging.getLogger("tuneforge.train")


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.kto import KTOConfig, KTOTrainer

    # prepare: data errors surface before the model loads
    job = prepare(cfg)
    data = build_preference(cfg.data, "kto")
    good = sum(data.train["label"])
    log.info("data: %d train examples (%d desirable), %d validation", len(data.train), good, data.stats["val"])
    held = held_out_pairs(cfg, job.tokenizer, None)  # the validation split holds unpaired examples
    run_dir = job.open_run(data.stats)
    model, counts = load_trainable(job)

    # build trainer
    k = cfg.kto
    args = training_arguments(
        cfg,
        run_dir,
        data.val is not None,
        KTOConfig,
        max_length=cfg.data.cutoff_len,
        beta=k.beta,
        desirable_weight=k.desirable_weight,
        undesirable_weight=k.undesirable_weight,
        train_sampling_strategy="sequential",  # KTO pairs each example with a neighbour for its KL term;
        # build_preference already shuffled the examples (seeded)
    )
    trainer = build_trainer(KTOTrainer, job, model, args, data.train, data.val, callbacks)

    # train, finish
    before = measure(trainer.model, held, "logprob", cfg, job.tokenizer) if held else None
    output = train(job, trainer)
    result = finish(job, trainer, output, counts, data.stats, before_save=drop_reference_adapter)
    if held and before:
        after = measure(trainer.model, held, "logprob", cfg, job.tokenizer)
        if run_dir.writes:  # rank 0 writes the run folder
            report(run_dir.root, held, "logprob", before, after, beta=cfg.kto.beta)
    return result
