"""What the TRL-based stages (rm, dpo, kto) share: load the model through the method table, train, save.

Each stage builds its own TRL config and trainer; this file holds the steps around them, so every stage file
stays readable top to bottom and every method of the method table works with every stage.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from tuneforge.config import RunConfig
from tuneforge.methods import (
    METHODS,
    apply_method,
    build_optimizer,
    count_parameters,
    describe,
    method_callbacks,
    save_trained,
)
from tuneforge.runs import RunDir
from tuneforge.stages.callbacks import ReadableProgress, RunMetrics
from tuneforge.stages.common import RunResult, final_losses, prepare_resume

log = logging.getLogger("tuneforge.train")


def prepare_model(model: PreTrainedModel, cfg: RunConfig, threads: int) -> tuple[Any, int, int]:
    model.config.use_cache = False  # no KV cache while training (see sft.py)
    model = apply_method(model, cfg.method)
    trainable, total = count_parameters(model)
    log.info("%s | %d threads", describe(model, cfg.method), threads)
    return model, trainable, total


def stage_callbacks(model: Any, cfg: RunConfig, run_dir: RunDir, extra: Sequence[TrainerCallback]) -> list[Any]:
    return [
        RunMetrics(run_dir, f"{cfg.name}: {cfg.stage} / {cfg.method.name}"),
        *method_callbacks(model, cfg.method),
        *extra,
    ]


def optimizers(model: Any, cfg: RunConfig, args: TrainingArguments) -> tuple[Any, None]:
    return build_optimizer(model, cfg.method, args), None  # None: the trainer's own default


def train_and_save(
    cfg: RunConfig,
    run_dir: RunDir,
    trainer: Trainer,
    tokenizer: Any,
    counts: tuple[int, int],
    started: float,
    stats: dict[str, Any],
    before_save: Callable[[Any], Any] | None = None,
) -> RunResult:
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ReadableProgress)
    output = trainer.train(resume_from_checkpoint=prepare_resume(cfg, run_dir))
    if trainer.eval_dataset is not None and cfg.train.eval_steps and trainer.state.global_step % cfg.train.eval_steps:
        trainer.evaluate()
    model = trainer.model
    if before_save is not None:
        model = before_save(model)
    method = METHODS[cfg.method.name]
    target = run_dir.adapter if method.output == "adapter" else run_dir.model
    model.config.use_cache = True  # type: ignore[union-attr]
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
        trainable_params=counts[0],
        total_params=counts[1],
        data_stats=stats,
    )
    (run_dir.root / "result.json").write_text(json.dumps(result.summary(), indent=2), encoding="utf-8")
    log.info("saved %s to %s", method.output, saved)
    return result


def drop_reference_adapter(model: Any) -> Any:
    """TRL's DPO/KTO add a frozen "ref" copy of a fresh PEFT adapter as the reference; it is not an output."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and "ref" in peft_config:
        model.set_adapter("default")
        model.delete_adapter("ref")
    return model
