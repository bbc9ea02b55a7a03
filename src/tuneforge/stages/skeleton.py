"""The steps every training stage takes, in order: prepare → build trainer → train → finish.

Each stage file (pt, sft, rm, dpo, kto) is these four steps, top to bottom, with its own data, model class,
trainer class and figures in between; what is the same for every stage is here, so that a reader who knows
one stage knows them all and every method of the method table works with every stage.

- prepare: `prepare(cfg)` (timer, the process group under a launcher, run-folder check, threads, tokenizer);
  the stage builds its data (every data error before the slow model load); `job.open_run(stats)` (the run
  folder and data_stats.json: rank 0 writes it, the other processes wait and only read it);
  `load_trainable(job)` (seeded load, the method applied);
- build trainer: `build_trainer(TrainerClass, job, model, args, train, val, callbacks)`;
- train: `train(job, trainer)` (readable progress, resume, a last evaluation);
- finish: `finish(job, trainer, output, counts, stats)` (the adapter or model saved, result.json).

A run that starts from an earlier one (model.adapter) was resolved before its stage ran (continuation.py:
`resolve_start`, called by `run_stage`); `load_trainable` then loads that run's base and trains its adapter
further, or folds it in and applies the method fresh; result.json notes the earlier run (`parent`).

With `privacy:` (DP-SGD, stages sft and pt) the stage also plans the privacy from its training rows before the
model loads (`privacy_plan`), and builds its trainer class with opacus inside (`private`, `privacy_arguments`,
`privacy_kwargs`; the trainer is tuneforge.privacy.dp_trainer's); finish writes the (ε, δ) spent into result.json.

With several processes (docs/scale.md) every rank runs every step; the Trainer keeps them in step, and
rank 0 alone writes the run folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import ProgressCallback, TrainerState
from transformers.trainer_utils import TrainOutput

from tuneforge.config import MethodSection, RunConfig
from tuneforge.distributed import DistributedError
from tuneforge.distributed.env import World
from tuneforge.distributed.group import all_equal, barrier, init_world, main_first
from tuneforge.distributed.strategy import (
    check_strategy,
    cpu_fsdp_trainer,
    fsdp_on_cpu,
    shard_summary,
    write_deepspeed_json,
)
from tuneforge.inference.base import load_base
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
from tuneforge.models.loader import load_tokenizer
from tuneforge.runs import RunDir, check_run_available, open_run
from tuneforge.stages.callbacks import ReadableProgress, RunMetrics
from tuneforge.stages.common import RunResult, final_losses, prepare_resume, set_threads
from tuneforge.stages.continuation import continued_adapter, start_record, train_further

log = logging.getLogger("tuneforge.train")


class StageRun:
    """One stage's run in progress: what prepare() set up, and the run folder once the data is good."""

    def __init__(
        self, cfg: RunConfig, tokenizer: Any, threads: int, started: float, world: World | None = None
    ) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.threads = threads
        self.started = started
        self.world = world or World()
        self._run_dir: RunDir | None = None
        self.privacy: Any = None  # the PrivacyPlan of a DP-SGD run (privacy_plan), None without privacy
        self.reload: Callable[[], Any] | None = None  # load_trainable again, as the stage called it

    def open_run(self, stats: dict[str, Any] | None) -> RunDir:
        """Create the run folder; `stats` (the data build's) go to data_stats.json, None: the stage writes it.
        With several processes rank 0 creates it while the others wait, then they open it read-only."""
        with main_first(self.world):
            if self.world.is_main:
                self._run_dir = open_run(self.cfg)
                write_deepspeed_json(self.cfg.distributed, self._run_dir)
            else:
                self._run_dir = RunDir(self.cfg.run_dir, writes=False)
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
    world = init_world()  # the process group, when a launcher started several processes
    check_strategy(cfg.distributed, world)
    check_method_shards(cfg, world)
    check_run_available(cfg)  # before any loading: never overwrite a run, fail fast on resume mistakes
    barrier()  # every rank has checked the folder before rank 0 creates it
    if not world.is_main:
        logging.getLogger("tuneforge").setLevel(logging.WARNING)  # one copy of the progress lines: rank 0's
    threads = set_threads(cfg, world)
    with main_first(world):  # rank 0 fills the Hugging Face cache first (model.download)
        tokenizer = load_tokenizer(cfg.model)
    return StageRun(cfg, tokenizer, threads, started, world)


def check_method_shards(cfg: RunConfig, world: World) -> None:
    """A method with its own optimizer (GaLore, APOLLO, LoRA+) cannot train under FSDP: the Trainer refuses
    optimizers built before it shards the model (transformers/trainer.py:715). Said here, before anything loads."""
    if world.distributed and cfg.distributed.strategy == "fsdp" and METHODS[cfg.method.name].optimizer:
        raise DistributedError(
            f"method {cfg.method.name!r} builds its own optimizer, which transformers' Trainer does not accept "
            "with FSDP (the optimizer must be built on the sharded parameters); use distributed.strategy=ddp"
        )


def check_world_fits(job: StageRun, train_size: int) -> None:
    """Refuse a process count the training set cannot feed: every rank must read the same samples, and a step
    needs batch_size different samples per process (accelerate would repeat samples to fill the ranks)."""
    world = job.world
    if not world.distributed:
        return
    if not all_equal(world, train_size):
        raise DistributedError(
            f"rank {world.rank} built {train_size} training samples, another rank a different number: every "
            "process must read the same data files (a shared folder, or the same copy on every machine)"
        )
    per_step = job.cfg.train.batch_size * world.world_size
    if train_size < per_step:
        raise DistributedError(
            f"{train_size} training samples cannot fill one step of {world.world_size} processes × "
            f"train.batch_size={job.cfg.train.batch_size} = {per_step} samples; use fewer processes or a smaller "
            "train.batch_size (the global batch is batch_size × grad_accum × processes)"
        )
    if train_size % per_step:
        log.info(
            "%d samples do not split evenly over %d processes × batch %d: the last step repeats samples from the "
            "start (accelerate's even_batches)",
            train_size,
            world.world_size,
            job.cfg.train.batch_size,
        )


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
    applied, and its (trainable, total) parameter counts. `before_method` adjusts the bare model first.

    With model.adapter (continuation.py) the base is the earlier run's, and either that run's adapter trains on
    (loaded trainable) or it is folded into the base (model.merge_adapter) and the method applies fresh."""
    job.reload = lambda: load_trainable(job, auto_class, before_method, **kwargs)[0]  # see whole_model()
    cfg = job.cfg
    set_seed(cfg.train.seed)
    further = continued_adapter(cfg)
    base = further.base if further is not None else cfg.model
    model = load_base(base, job.tokenizer, auto_class, **kwargs, **model_load_kwargs(cfg.method))
    if before_method is not None:
        before_method(model)
    # No KV cache while training: it is useless there, and transformers only detects packed sequences
    # (position ids restarting) when no cache object exists, so with a cache packed samples would attend
    # to each other.
    model.config.use_cache = False
    model = train_further(model, cfg, further) if further is not None else apply_method(model, cfg.method)
    trainable, total = count_parameters(model)
    log.info("%s | %d threads", describe(model, cfg.method), job.threads)
    return model, (trainable, total)


def privacy_plan(job: StageRun, train_data: Dataset) -> Any:
    """The DP-SGD plan (tuneforge.privacy.dp.PrivacyPlan) from the training rows' `unit` column, or None when the
    run has no privacy section; its errors come before the model loads. opacus is imported only here."""
    if not job.cfg.privacy.enabled:
        return None
    from tuneforge.privacy.dp import DPError, plan_privacy

    if job.world.distributed:
        raise DPError(
            f"DP-SGD runs in one process here; this run has {job.world.world_size} (start it without --nproc / "
            "torchrun)"
        )
    job.privacy = plan_privacy(job.cfg, train_data["unit"])
    return job.privacy


def private(trainer_class: type[Trainer], plan: Any) -> type[Trainer]:
    """The stage's trainer class, with DP-SGD when there is a plan."""
    if plan is None:
        return trainer_class
    from tuneforge.privacy.dp_trainer import dp_trainer_class

    return dp_trainer_class(trainer_class)


def privacy_arguments(plan: Any) -> dict[str, Any]:
    """TrainingArguments overrides of a DP-SGD run ({} without one)."""
    if plan is None:
        return {}
    from tuneforge.privacy.dp_trainer import dp_training_arguments

    return dp_training_arguments(plan)


def privacy_kwargs(job: StageRun, plan: Any) -> dict[str, Any]:
    """What the DP trainer class takes beyond the stage's own trainer ({} without privacy)."""
    if plan is None:
        return {}
    return {"privacy_plan": plan, "run_dir": job.run_dir, "label_only": job.cfg.train.label_only_logits}


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
    check_world_fits(job, len(train_data))
    if fsdp_on_cpu(cfg.distributed, job.world):
        trainer_class = cpu_fsdp_trainer(trainer_class)  # accelerate shards only accelerator groups itself
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
    resume_from = prepare_resume(job.cfg, job.run_dir)
    finished = _finished_state(resume_from)
    if resume_from and finished is not None:
        # transformers' loop checks max_steps only after a step, so resuming from the final checkpoint (a run that
        # stopped after it, before saving) would train one step too many: load that checkpoint and finish instead.
        log.info("%s is the run's last step: nothing left to train", resume_from)
        trainer._load_from_checkpoint(resume_from)  # the Trainer's own loader: adapters, full and sharded models
        trainer.state = finished
        output = TrainOutput(finished.global_step, 0.0, {})
    else:
        output = trainer.train(resume_from_checkpoint=resume_from)
    if job.world.distributed:
        log.info(
            "trained data-parallel: %s over %d processes (model wrapped as %s)",
            job.cfg.distributed.strategy,
            job.world.world_size,
            type(trainer.model_wrapped).__name__,
        )
        if job.cfg.distributed.strategy == "fsdp":
            log.info(shard_summary(trainer.model_wrapped, job.world))
    every = job.cfg.train.eval_steps
    if trainer.eval_dataset is not None and every and trainer.state.global_step % every:
        trainer.evaluate()  # the last steps fell between evaluation points
    return output


def _finished_state(checkpoint: str | None) -> TrainerState | None:
    """The checkpoint's TrainerState when it is the last step of its run (global_step has reached max_steps)."""
    if checkpoint is None:
        return None
    state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
    return state if state.max_steps and state.global_step >= state.max_steps else None


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
    method = METHODS[cfg.method.name]
    target = run_dir.adapter if method.output == "adapter" else run_dir.model
    model = whole_model(job, trainer)
    saved = target
    if model is not None:  # rank 0 writes the run folder
        if before_save is not None:
            model = before_save(model)
        model.config.use_cache = True  # the saved model generates with a cache
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
        privacy=trainer.privacy_report() if job.privacy is not None else None,  # type: ignore[attr-defined]
        parent=start_record(cfg),
    )
    if result.privacy is not None:
        log.info(privacy_line(result.privacy))
    run_dir.write_json(run_dir.result, result.summary())
    log.info("saved %s to %s", method.output, saved)
    barrier()  # the other ranks leave once the output is on disk
    return result


def privacy_line(report: dict[str, Any]) -> str:
    """One line of the (ε, δ) a DP-SGD run spent, for the log and the CLI."""

    def eps(value: float | None) -> str:
        return "∞" if value is None else f"{value:.4g}"

    return (
        f"privacy: ε = {eps(report['epsilon'])} ({report['accountant']}; rdp {eps(report['epsilon_rdp'])}, prv "
        f"{eps(report['epsilon_prv'])}) at δ = {report['delta']:.3g}, {report['steps']} steps, noise multiplier "
        f"{report['noise_multiplier']:.4g}, sample rate {report['sample_rate']:.4g}, "
        f"{report['units']} {report['unit']}s"
    )


def whole_model(job: StageRun, trainer: Trainer) -> Any:
    """The trained model, whole, in the process that saves it (rank 0); None in the others.

    With DDP or ZeRO-2 every rank holds the whole model. FSDP2 and ZeRO-3 hold a shard per rank: every rank
    joins the gather (accelerate's get_state_dict, a collective), and rank 0 loads the full state dict into a
    fresh, unsharded copy of the model, because a sharded module cannot be saved as an adapter folder.
    """
    d = job.cfg.distributed
    sharded = job.world.distributed and (d.strategy == "fsdp" or (d.strategy == "deepspeed" and d.zero_stage == 3))
    if not sharded:
        return trainer.model if job.world.is_main else None
    state = trainer.accelerator.get_state_dict(trainer.model)
    if not job.world.is_main:
        return None
    if job.reload is None:
        raise RuntimeError("whole_model: the model was not loaded with load_trainable")
    fresh = job.reload()
    # Adapters the trainer added beside the trained one (the "ref" copy TRL's DPO / KTO / GRPO trainers make,
    # removed by drop_reference_adapter before saving) are not in the fresh model: their keys are left out; any
    # other key the fresh model lacks, or a trained adapter key the gather did not deliver, is an error.
    extra = set(getattr(trainer.model, "peft_config", None) or {}) - set(getattr(fresh, "peft_config", None) or {})
    own = fresh.state_dict().keys()
    state = {k: v for k, v in state.items() if k in own or not extra.intersection(k.split("."))}
    loaded = fresh.load_state_dict(state, strict=False)
    if loaded.unexpected_keys:
        raise RuntimeError(f"the gathered state dict has keys the model lacks: {loaded.unexpected_keys[:5]}")
    trained = {n for n, p in fresh.named_parameters() if p.requires_grad}
    missing = sorted(trained.intersection(loaded.missing_keys))
    if missing:
        raise RuntimeError(f"the gathered state dict lacks trained parameters: {missing[:5]}")
    return fresh


def drop_reference_adapter(model: Any) -> Any:
    """finish's `before_save` for TRL's DPO/KTO: they add a frozen "ref" copy of a fresh PEFT adapter as the
    reference; it is not an output."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and "ref" in peft_config:
        model.set_adapter("default")
        model.delete_adapter("ref")
    return model
