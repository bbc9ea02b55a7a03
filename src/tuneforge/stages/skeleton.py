"""The steps every training stage takes, in order: prepare → build trainer → train → finish.

Each stage file (pt, sft, rm, dpo, kto) is these four steps, top to bottom, with its own data, model class,
trainer class and figures in between; what is the same for every stage is here, so that a reader who knows
one stage knows them all and every method of the method table works with every stage.

- prepare: `prepare(cfg)` (timer, run-folder check, threads, tokenizer); the stage builds its data (every data
  error before the slow model load); `job.open_run(stats)` (the run folder and data_stats.json);
  `load_trainable(job)` (seeded load, the method applied);
- build trainer: `build_trainer(TrainerClass, job, model, args, train, val, callbacks)`;
- train: `train(job, trainer)` (readable progress, resume, a last evaluation);
- finish: `finish(job, trainer, output, counts, stats)` (the adapter or model saved, result.json).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import TrainOutput

from tuneforge.config import MethodSection, RunConfig
from tuneforge.methods import (
    METHODS,
    MethodError,
    apply_method,
    build_optimizer,
    count_parameters,
    describe,
    method_callbacks,
    model_load_kwargs,
    save_trained,
)
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.runs import RunDir, check_run_available, open_run
from tuneforge.stages.callbacks import ReadableProgress, RunMetrics
from tuneforge.stages.common import RunResult, final_losses, prepare_resume, set_threads

log = logging.getLogger("tuneforge.train")


class StageRun:
    """One stage's run in progress: what prepare() set up, and the run folder once the data is good."""

    def __init__(self, cfg: RunConfig, tokenizer: Any, threads: int, started: float) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.threads = threads
        self.started = started
        self._run_dir: RunDir | None = None

    def open_run(self, stats: dict[str, Any] | None) -> RunDir:
        """Create the run folder; `stats` (the data build's) go to data_stats.json, None: the stage writes it."""
        self._run_dir = open_run(self.cfg)
        if stats is not None:
            self._run_dir.write_json(self._run_dir.data_stats, stats)
        return self._run_dir

    @property
    def run_dir(self) -> RunDir:
        if self._run_dir is None:
            raise RuntimeError("open_run() comes first: the run folder opens once the data is built")
        return self._run_dir


# --- prepare ---------------------------------------------------------------------------------------------


def prepare(cfg: RunConfig) -> StageRun:
    started = time.perf_counter()
    check_run_available(cfg)  # before any loading: never overwrite a run, fail fast on resume mistakes
    threads = set_threads(cfg)
    return StageRun(cfg, load_tokenizer(cfg.model), threads, started)


def with_saved_modules(params: MethodSection, modules: Sequence[str], refusal: str) -> Any:
    """`params` with `modules` added to what an adapter saves (PEFT modules_to_save), for a stage that trains
    modules the method would not save (a new head, new embedding rows); a method that cannot save them is
    refused with `refusal` ({method} names it). Called before anything loads."""
    if METHODS[params.name].output == "model":
        return params  # the whole model is saved, those modules included
    if "modules_to_save" not in type(params).model_fields:
        raise MethodError(refusal.format(method=params.name))
    kept = list(params.modules_to_save)  # type: ignore[attr-defined]  # checked just above
    wanted = [m for m in modules if m not in kept]
    return params.model_copy(update={"modules_to_save": [*kept, *wanted]}) if wanted else params


def load_trainable(
    job: StageRun, auto_class: Any = None, before_method: Callable[[Any], None] | None = None, **kwargs: Any
) -> tuple[Any, tuple[int, int]]:
    """The model (seeded, so adapter initialisation does not depend on what ran before) with the method
    applied, and its (trainable, total) parameter counts. `before_method` adjusts the bare model first."""
    cfg = job.cfg
    set_seed(cfg.train.seed)
    model = load_model(cfg.model, job.tokenizer, auto_class, **kwargs, **model_load_kwargs(cfg.method))
    if before_method is not None:
        before_method(model)
    # No KV cache while training: it is useless there, and transformers only detects packed sequences
    # (position ids restarting) when no cache object exists, so with a cache packed samples would attend
    # to each other.
    model.config.use_cache = False
    model = apply_method(model, cfg.method)
    trainable, total = count_parameters(model)
    log.info("%s | %d threads", describe(model, cfg.method), job.threads)
    return model, (trainable, total)


# --- build trainer ---------------------------------------------------------------------------------------


def build_trainer(
    trainer_class: type[Trainer],
    job: StageRun,
    model: Any,
    args: TrainingArguments,
    train_data: Dataset,
    val_data: Dataset | None,
    callbacks: Sequence[TrainerCallback],
    **extra: Any,
) -> Any:
    """The stage's trainer with the shared parts: metrics, the method's callbacks and optimizer."""
    cfg = job.cfg
    return trainer_class(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=val_data,
        processing_class=job.tokenizer,
        callbacks=[
            RunMetrics(job.run_dir, f"{cfg.name}: {cfg.stage} / {cfg.method.name}"),
            *method_callbacks(model, cfg.method),
            *callbacks,
        ],
        optimizers=(build_optimizer(model, cfg.method, args), None),  # None: the trainer's own default
        **extra,
    )


# --- train -----------------------------------------------------------------------------------------------


def train(job: StageRun, trainer: Trainer) -> TrainOutput:
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ReadableProgress)
    output = trainer.train(resume_from_checkpoint=prepare_resume(job.cfg, job.run_dir))
    every = job.cfg.train.eval_steps
    if trainer.eval_dataset is not None and every and trainer.state.global_step % every:
        trainer.evaluate()  # the last steps fell between evaluation points
    return output


# --- finish ----------------------------------------------------------------------------------------------


def finish(
    job: StageRun,
    trainer: Trainer,
    output: TrainOutput,
    counts: tuple[int, int],
    stats: dict[str, Any],
    before_save: Callable[[Any], Any] | None = None,
) -> RunResult:
    """Save the adapter or model (as the method table says) and write result.json."""
    cfg, run_dir = job.cfg, job.run_dir
    model = trainer.model
    if before_save is not None:
        model = before_save(model)
    method = METHODS[cfg.method.name]
    target = run_dir.adapter if method.output == "adapter" else run_dir.model
    model.config.use_cache = True  # type: ignore[union-attr]  # the saved model generates with a cache
    saved = save_trained(model, cfg.method, target, job.tokenizer)
    train_loss, eval_loss = final_losses(run_dir.read_metrics())
    runtime = output.metrics.get("train_runtime") or 0.0
    seen = trainer.state.num_input_tokens_seen
    result = RunResult(
        run_dir=run_dir.root,
        output_dir=saved,
        train_loss=train_loss,
        eval_loss=eval_loss,
        steps=trainer.state.global_step,
        seconds=round(time.perf_counter() - job.started, 2),
        tokens_per_s=round(seen / runtime, 1) if runtime and seen else None,
        trainable_params=counts[0],
        total_params=counts[1],
        data_stats=stats,
    )
    run_dir.write_json(run_dir.result, result.summary())
    log.info("saved %s to %s", method.output, saved)
    return result


def drop_reference_adapter(model: Any) -> Any:
    """finish's `before_save` for TRL's DPO/KTO: they add a frozen "ref" copy of a fresh PEFT adapter as the
    reference; it is not an output."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and "ref" in peft_config:
        model.set_adapter("default")
        model.delete_adapter("ref")
    return model
