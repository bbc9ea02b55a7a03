"""KTO on unpaired examples, each answer tagged desirable or not (LLaMA-Factory's `kto_tag`), on TRL's KTOTrainer.

The reference is the same as for DPO: with an adapter method, a frozen copy of the freshly initialised
adapter (for LoRA exactly the base model), never a second copy of the model. KTO's examples are unpaired, so
its held-out figures (preference_eval.json) need pairs named in `data.test_datasets`, as for dpo.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence

from transformers import TrainerCallback, set_seed

from tuneforge.config import RunConfig
from tuneforge.data.preference import build_preference
from tuneforge.methods import model_load_kwargs
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.runs import check_run_available, open_run
from tuneforge.stages.common import RunResult, set_threads, training_arguments
from tuneforge.stages.preference_eval import held_out_pairs, measure, report
from tuneforge.stages.trl_common import (
    drop_reference_adapter,
    optimizers,
    prepare_model,
    stage_callbacks,
    train_and_save,
)

log = logging.getLogger("tuneforge.train")


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.kto import KTOConfig, KTOTrainer

    started = time.perf_counter()
    check_run_available(cfg)
    threads = set_threads(cfg)
    tokenizer = load_tokenizer(cfg.model)
    data = build_preference(cfg.data, "kto")
    good = sum(data.train["label"])
    log.info("data: %d train examples (%d desirable), %d validation", len(data.train), good, data.stats["val"])
    held = held_out_pairs(cfg, tokenizer, None)  # the validation split holds unpaired examples
    run_dir = open_run(cfg)
    (run_dir.root / "data_stats.json").write_text(json.dumps(data.stats, indent=2), encoding="utf-8")

    set_seed(cfg.train.seed)
    model = load_model(cfg.model, tokenizer, **model_load_kwargs(cfg.method))
    model, trainable, total = prepare_model(model, cfg, threads)
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
    trainer = KTOTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.val,
        processing_class=tokenizer,
        callbacks=stage_callbacks(model, cfg, run_dir, callbacks),
        optimizers=optimizers(model, cfg, args),
    )
    before = measure(trainer.model, held, "logprob", cfg, tokenizer) if held else None
    result = train_and_save(
        cfg, run_dir, trainer, tokenizer, (trainable, total), started, data.stats, before_save=drop_reference_adapter
    )
    if held and before:
        after = measure(trainer.model, held, "logprob", cfg, tokenizer)
        report(run_dir.root, held, "logprob", before, after, beta=cfg.kto.beta)
    return result
