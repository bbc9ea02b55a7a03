"""A plan: the memory and time of one setup on one piece of hardware, whether it fits, and if not the cheapest
change that makes it fit.

The changes are tried in order of what they cost the user (LEVERS), alone and together: gradient checkpointing
(a third more compute, nothing else), a smaller micro-batch with more gradient accumulation (same optimisation,
slower), 8-bit AdamW states, LoRA instead of a full-weight method, QLoRA's 4-bit base, sharding over more GPUs
(ZeRO-3 / FSDP: more hardware), and last shorter sequences (a different training set). The first combination
that fits, by total cost (then by step time), is the fix the plan names.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from tuneforge.config import MethodSection
from tuneforge.config.sections import sharding_refusal
from tuneforge.plan import PlanError
from tuneforge.plan.hardware import Hardware
from tuneforge.plan.memory import ADAM_32, PRECISIONS, Memory, Setup, Strategy, memory
from tuneforge.plan.shapes import ModelShape
from tuneforge.plan.timing import Timing, timing
from tuneforge.plan.trainable import adapt


@dataclass(frozen=True)
class Request:
    shape: ModelShape
    method: MethodSection
    seq: int
    batch: int
    hardware: Hardware
    precision: str = "fp32"
    grad_accum: int = 1
    checkpointing: bool = False
    optim: str = "adamw_torch"
    label_only: bool = True
    attention: str = "sdpa"
    strategy: Strategy = "single"
    offload: bool = False
    samples: int | None = None
    epochs: float = 1.0

    def __post_init__(self) -> None:
        if self.seq <= 0:
            raise PlanError(f"--seq {self.seq}: the sequence length must be a positive number of tokens")
        if self.batch <= 0:
            raise PlanError(f"--batch {self.batch}: the batch size must be 1 or more")
        if self.grad_accum <= 0:
            raise PlanError(f"train.grad_accum={self.grad_accum} must be 1 or more")
        if self.precision not in PRECISIONS:
            raise PlanError(f"--precision {self.precision!r}: known: {', '.join(PRECISIONS)}")
        if self.attention not in ("sdpa", "eager"):
            raise PlanError(f"--attention {self.attention!r}: sdpa or eager")
        if self.samples is not None and self.samples <= 0:
            raise PlanError(f"--samples {self.samples}: give the number of training samples per epoch (> 0)")
        if self.shape.max_positions and self.seq > self.shape.max_positions:
            raise PlanError(f"--seq {self.seq} exceeds the model's max_position_embeddings={self.shape.max_positions}")
        if self.strategy != "single" and self.hardware.count < 2:
            raise PlanError(f"strategy {self.strategy} shards over several devices; this hardware has one")
        refusal = sharding_refusal(self.method.name, _config_strategy(self.strategy))
        if refusal:
            raise PlanError(refusal)


def _config_strategy(strategy: Strategy) -> str:
    return {"single": "ddp", "ddp": "ddp", "zero2": "deepspeed", "zero3": "deepspeed"}.get(strategy, "fsdp")


@dataclass
class Fix:
    changes: list[str]
    request: Request
    peak: float
    step_s: float


@dataclass
class Plan:
    request: Request
    setup: Setup
    memory: Memory
    timing: Timing
    trainable: int
    total: int
    fits: bool
    fix: Fix | None = None
    notes: list[str] = field(default_factory=list)


def setup_of(req: Request) -> Setup:
    a = adapt(req.shape, req.method, req.hardware.kind)
    precision = PRECISIONS[req.precision]
    compute = getattr(req.method, "compute_dtype", None)  # QLoRA dequantises to its own compute dtype
    if a.quant_bits == 4 and compute is not None:
        precision = replace(precision, act=2 if compute == "bfloat16" else 4)
    return Setup(
        shape=req.shape,
        adaptation=a,
        precision=precision,
        seq=req.seq,
        batch=req.batch,
        grad_accum=req.grad_accum,
        checkpointing=req.checkpointing,
        attention=req.attention,  # type: ignore[arg-type]
        optim=req.optim,
        label_only=req.label_only,
        strategy=req.strategy,
        devices=req.hardware.count if req.strategy != "single" else 1,
        offload=req.offload,
        device_kind=req.hardware.kind,
    )


def evaluate(req: Request) -> tuple[Setup, Memory, Timing]:
    s = setup_of(req)
    mem = memory(s, req.hardware.framework, req.hardware.retention)
    return s, mem, timing(s, req.hardware, req.samples, req.epochs)


def make_plan(req: Request, search: bool = True) -> Plan:
    s, mem, t = evaluate(req)
    fits = mem.peak <= req.hardware.memory
    plan = Plan(req, s, mem, t, s.adaptation.trainable_params, req.shape.skeleton.total(), fits)
    plan.notes += s.adaptation.notes
    if req.hardware.kind == "cpu" and req.precision != "fp32":
        plan.notes.append("on a CPU without AVX512-BF16 / AMX, 16-bit matmuls are emulated and far slower")
    if not fits and search:
        plan.fix = cheapest_fix(req)
    return plan


# ------------------------------------------------------------------------------------------------- the fixes

Lever = tuple[str, float, Any]  # (description, cost, change to the request)


def _levers(req: Request) -> list[list[Lever | None]]:
    """For each kind of change: None (unchanged) or its alternatives, each with its cost."""
    from tuneforge.methods.table import method_of

    options: list[list[Lever | None]] = []
    if not req.checkpointing:
        options.append(
            [None, ("gradient checkpointing on (train.gradient_checkpointing=true)", 1.0, {"checkpointing": True})]
        )
    halvings = int(math.log2(req.batch)) if req.batch > 1 else 0
    batches: list[Lever | None] = [None]
    for k in range(1, halvings + 1):
        b = req.batch // 2**k
        text = f"train.batch_size={b} with train.grad_accum={req.grad_accum * 2**k} (same global batch)"
        batches.append((text, float(k), {"batch": b, "grad_accum": req.grad_accum * 2**k}))
    options.append(batches)
    if req.optim in ADAM_32:
        options.append(
            [None, ("8-bit AdamW states (train.optim=adamw_8bit, bitsandbytes)", 2.0, {"optim": "adamw_8bit"})]
        )
    family = method_of(req.method.name).family
    methods: list[Lever | None] = [None]
    if family == "full":
        methods.append(("method lora (r=8, all linear layers) instead of " + req.method.name, 3.0, {"method": "lora"}))
        methods.append(("method qlora (4-bit NF4 base, LoRA r=8)", 7.0, {"method": "qlora"}))
    elif family == "lora" and req.method.name != "qlora":
        methods.append(("method qlora (its base in 4-bit NF4, the same LoRA)", 4.0, {"method": "qlora"}))
    options.append(methods)
    if req.hardware.kind == "gpu":
        shards: list[Lever | None] = [None]
        for n in (2, 4, 8):
            if n >= req.hardware.count and n > 1:
                text = f"FSDP full shard (ZeRO-3) over {n} × {req.hardware.name} (distributed.strategy=fsdp)"
                shards.append((text, 2.0 + n, {"strategy": "fsdp", "devices": n}))
        if req.hardware.count > 1 and req.strategy in ("single", "ddp"):
            text = f"FSDP full shard over the {req.hardware.count} GPUs given (distributed.strategy=fsdp)"
            shards.append((text, 2.0, {"strategy": "fsdp", "devices": req.hardware.count}))
        options.append(shards)
    seqs: list[Lever | None] = [None]
    for k in (1, 2, 3):
        if req.seq // 2**k >= 64:
            seqs.append(
                (
                    f"data.cutoff_len={req.seq // 2**k} (shorter samples: a different training set)",
                    10.0 * k,
                    {"seq": req.seq // 2**k},
                )
            )
    options.append(seqs)
    return options


def _apply(req: Request, change: dict[str, Any]) -> Request:
    from tuneforge.methods.table import method_of

    change = dict(change)
    if "method" in change:
        name = change.pop("method")
        kept = req.method.model_dump() if method_of(req.method.name).family == "lora" else {}
        keys = method_of(name).params.model_fields
        params = {k: v for k, v in kept.items() if k in keys and k not in ("name", "init")}
        if name == "qlora" and PRECISIONS[req.precision].act == 2:
            params["compute_dtype"] = "bfloat16"  # keep the 16-bit compute the plan had
        change["method"] = method_of(name).params.model_validate({**params, "name": name})
    if "devices" in change:
        n = change.pop("devices")
        change["hardware"] = replace(req.hardware, count=n)
    return replace(req, **change)


def cheapest_fix(req: Request) -> Fix | None:
    candidates: list[tuple[float, list[str], dict[str, Any]]] = []
    for combo in itertools.product(*_levers(req)):
        chosen = [c for c in combo if c is not None]
        if not chosen:
            continue
        change: dict[str, Any] = {}
        for _, _, delta in chosen:
            change.update(delta)
        candidates.append((sum(c[1] for c in chosen), [c[0] for c in chosen], change))
    candidates.sort(key=lambda c: c[0])
    best: Fix | None = None
    best_cost = math.inf
    for cost, texts, change in candidates:
        if cost > best_cost:
            break
        try:
            new = _apply(req, change)
            _, mem, t = evaluate(new)
        except PlanError:  # e.g. QLoRA cannot be sharded
            continue
        if mem.peak <= new.hardware.memory and (best is None or t.step_s < best.step_s):
            best, best_cost = Fix(texts, new, mem.peak, t.step_s), cost
    return best
