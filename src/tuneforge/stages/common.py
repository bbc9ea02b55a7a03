"""The pieces every training stage is built from: the result record, threads and the CPU matmul route,
TrainingArguments from the config, resume. The steps that use them, in order, are in skeleton.py."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from tuneforge.config import RunConfig
from tuneforge.distributed.env import World, world_from_env
from tuneforge.distributed.strategy import trainer_kwargs
from tuneforge.runs import RunDir
from tuneforge.utils.cpu import native_bf16, use_onednn_fp32

log = logging.getLogger("tuneforge.train")


@dataclass
class RunResult:
    run_dir: Path
    output_dir: Path
    train_loss: float | None
    eval_loss: float | None
    steps: int
    seconds: float
    tokens_per_s: float | None
    trainable_params: int
    total_params: int
    data_stats: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None  # DP-SGD runs: the (ε, δ) spent and how (tuneforge.privacy.dp)
    # model.adapter runs: the run (and adapter) this one started from, folded in or trained further
    parent: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        skipped = {"data_stats"} | {k for k in ("privacy", "parent") if getattr(self, k) is None}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items() if k not in skipped}


def set_threads(cfg: RunConfig, world: World | None = None) -> int:
    """Use every core for intra-op work (shared by the processes of this machine); one inter-op thread (a
    2-core CPU has nothing to overlap)."""
    per_machine = world.local_world_size if world is not None else 1
    threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // per_machine)
    torch.set_num_threads(threads)
    return threads


def cpu_settings(cfg: RunConfig) -> dict[str, Any]:
    """Apply the matmul route for this process (docs/speed.md); returns what was decided, for cpu.json."""
    if torch.cuda.is_available():
        return {"device": "cuda"}
    route = use_onednn_fp32(cfg.train.onednn_fp32)
    bf16 = native_bf16()
    if cfg.train.bf16_autocast and not bf16:
        log.warning(
            "train.bf16_autocast: this CPU has no native bf16 matmul (AVX512-BF16/AMX); bf16 is emulated, slowly"
        )
    log.info("fp32 matmul via oneDNN: %s (%s); native bf16: %s", route.used, route.reason, bf16)
    return {"onednn_fp32": route.used, "onednn_fp32_reason": route.reason, "native_bf16": bf16}


def training_arguments(
    cfg: RunConfig,
    run: RunDir,
    has_eval: bool,
    args_class: type[TrainingArguments] = TrainingArguments,
    **overrides: Any,
) -> TrainingArguments:
    """The one builder of TrainingArguments from a RunConfig; TRL stages pass their config class (a
    TrainingArguments subclass) as `args_class` and its extra fields as `overrides`. Under a launcher, the
    Trainer runs data-parallel on the process group (distributed: DDP, FSDP2 or DeepSpeed; docs/scale.md):
    each process takes batch_size samples per micro-step, so a step's global batch is
    batch_size × grad_accum × processes."""
    t = cfg.train
    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if t.eval_steps else "epoch"
    kwargs: dict[str, Any] = {
        "output_dir": str(run.checkpoints),
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps,
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.lr,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": t.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": t.optim,
        "logging_steps": t.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps" if t.save_steps else "no",
        "save_steps": t.save_steps or 500,
        "save_total_limit": t.save_total_limit,
        "eval_strategy": eval_strategy,
        "eval_steps": t.eval_steps or None,
        "seed": t.seed,
        "data_seed": t.seed,
        "activation_checkpointing": t.gradient_checkpointing,
        "train_sampling_strategy": "group_by_length" if t.group_by_length and not cfg.data.packing else "random",
        "report_to": list(t.report_to) or "none",
        "use_cpu": not torch.cuda.is_available(),
        "bf16": cfg.model.dtype == "bfloat16" or t.bf16_autocast,  # on fp32 weights: autocast, fp32 master weights
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        "include_num_input_tokens_seen": "non_padding",
        "disable_tqdm": False,
        "save_only_model": False,
    }
    kwargs.update(trainer_kwargs(cfg.distributed, world_from_env()))
    kwargs.update(overrides)
    return args_class(**kwargs)


def prepare_resume(cfg: RunConfig, run: RunDir) -> str | None:
    """The checkpoint to resume from; metrics logged after it (by the interrupted run) are dropped."""
    if not cfg.train.resume:
        return None
    ckpt = run.last_checkpoint()
    if ckpt is None:  # open_run already refused this case; kept for callers that skip it
        return None
    step = int(ckpt.name.split("-")[-1])
    kept = [r for r in run.read_metrics() if r.get("step", 0) <= step and "train_loss" not in r]
    if run.writes:  # rank 0 writes the run folder
        run.metrics.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    log.info("resuming from %s (step %d)", ckpt, step)
    return str(ckpt)


def final_losses(records: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    train = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    return (train[-1] if train else None), (evals[-1] if evals else None)
