"""`tuneforge plan`: a run config (or the defaults) and the verb's flags → a Request → the printed plan.

The config's own keys decide what they decide in training: `model.path`, `method`, `data.cutoff_len`
(sequence length), `train.batch_size`, `train.grad_accum`, `train.gradient_checkpointing`, `train.optim`,
`train.label_only_logits`, `train.epochs`, `model.dtype` / `train.bf16_autocast` (precision) and
`distributed` (strategy, zero_stage, shard, offload). The flags (--model, --method, --seq, --batch, --precision)
override them, and --gpu / --cpu name the hardware (default: this machine, detected and measured).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.plan import PlanError
from tuneforge.plan.hardware import Hardware, cpu, gpu, this_machine
from tuneforge.plan.memory import Strategy
from tuneforge.plan.planner import Request, make_plan
from tuneforge.plan.report import as_dict, text
from tuneforge.plan.shapes import load_shape


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The config keys the flags stand for; `--method M` replaces the whole method section with M's defaults."""
    extra = [f"method={args.method}"] if args.method else []
    if args.seq is not None:
        extra.append(f"data.cutoff_len={args.seq}")
    if args.batch is not None:
        extra.append(f"train.batch_size={args.batch}")
    return extra


def precision_of(cfg: RunConfig) -> str:
    dtype = cfg.model.dtype
    if dtype == "bfloat16":
        return "bf16"
    if dtype == "float16":
        return "fp16"
    return "bf16-mixed" if cfg.train.bf16_autocast else "fp32"


def strategy_of(cfg: RunConfig, devices: int) -> Strategy:
    if devices < 2:
        return "single"
    d = cfg.distributed
    if d.strategy == "fsdp":
        return "fsdp_grad_op" if d.shard == "grad_op" else "fsdp"
    if d.strategy == "deepspeed":
        return "zero3" if d.zero_stage == 3 else "zero2"
    return "ddp"


def hardware_of(args: argparse.Namespace, threads: int | None) -> Hardware:
    if args.gpu and args.cpu:
        raise PlanError("give --gpu NAME or --cpu, not both")
    if args.gpu:
        if args.cores is not None or args.ram is not None:
            raise PlanError("--cores and --ram describe a CPU (--cpu); a GPU's memory is --gpu-memory")
        return gpu(args.gpu, args.gpus or 1, args.gpu_memory)
    if args.gpus is not None or args.gpu_memory is not None:
        raise PlanError("--gpus and --gpu-memory need --gpu NAME (the GPU table: docs/plan.md)")
    if args.cpu or args.cores is not None or args.ram is not None:
        return cpu(args.cores, args.ram, threads=threads)
    return this_machine(threads)


def request_of(cfg: RunConfig, args: argparse.Namespace) -> Request:
    shape = load_shape(args.model or cfg.model.path)
    hw = hardware_of(args, cfg.train.threads)
    samples = args.samples if args.samples is not None else count_samples(cfg)
    return Request(
        shape=shape,
        method=cfg.method,
        seq=cfg.data.cutoff_len if args.seq is None else args.seq,
        batch=cfg.train.batch_size if args.batch is None else args.batch,
        hardware=hw,
        precision=args.precision or precision_of(cfg),
        grad_accum=cfg.train.grad_accum,
        checkpointing=cfg.train.gradient_checkpointing,
        optim=cfg.train.optim,
        label_only=cfg.train.label_only_logits,
        attention=args.attention,
        strategy=strategy_of(cfg, hw.count),
        offload=cfg.distributed.offload and hw.count > 1,
        samples=samples,
        epochs=cfg.train.epochs,
    )


def count_samples(cfg: RunConfig) -> int | None:
    """Training samples per epoch from data.datasets, counted without tokenising (None when no data is set):
    max_samples / num_samples per dataset, data.mix_size, minus the validation split."""
    d = cfg.data
    if not d.datasets:
        return None
    from tuneforge.data.mixing import mix_counts
    from tuneforge.data.registry import resolve
    from tuneforge.data.sources import read_records

    sizes = []
    for spec in d.datasets:
        resolved = resolve(spec, d.dataset_dir)
        n = resolved.num_samples or sum(1 for f in resolved.files for _ in read_records(f))
        sizes.append(min(n, spec.max_samples) if spec.max_samples else n)
    total = sum(mix_counts(sizes, [s.ratio for s in d.datasets], d.mix_size))
    val = math.ceil(d.val_size * total) if 0 < d.val_size < 1 else int(d.val_size)
    return max(total - val, 1)


def plan_main(cfg: RunConfig, args: argparse.Namespace) -> int:
    plan = make_plan(request_of(cfg, args))
    if cfg.stage not in ("sft", "pt"):
        plan.notes.append(
            f"stage {cfg.stage}: planned as one forward/backward per sample; preference stages run two sequences "
            "per sample (and a reference forward where they keep one)"
        )
    out: Any = as_dict(plan) if args.json else text(plan)
    print(json.dumps(out, indent=2) if args.json else out, end="" if not args.json else "\n")
    return 0
