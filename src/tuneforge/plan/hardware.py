"""The hardware a plan is for: this machine (detected, its matmul FLOP/s measured) or a named one.

GPU figures are the vendors' datasheet numbers (dense tensor-core FLOP/s, no sparsity; memory as nvidia-smi
reports it); a GPU reaches a fraction of its peak in a fine-tuning step, GPU_UTILISATION, an assumption
(docs/plan.md says where it comes from) since no GPU was measured here. The CPU's FLOP/s are measured on the
spot with tuneforge.utils.cpu.matmul_flops (the same probe `tuneforge bench speed` uses), at the thread count
the run will use, and its utilisation CPU_UTILISATION was fitted on this machine by `python -m tuneforge.plan.check`.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Literal

from tuneforge.plan import PlanError

GIB = 2**30
MIB = 2**20


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_mib: int  # as nvidia-smi reports the card's total
    bf16_tflops: float | None  # dense tensor-core peak, fp32 accumulate; None: no bf16
    fp16_tflops: float
    fp32_tflops: float  # CUDA cores (torch keeps TF32 off for matmuls by default)
    bandwidth_gbs: float


# NVIDIA datasheets and architecture whitepapers (A100, H100/H200 SXM, L4, L40S, RTX 4090/3090 (Ada / Ampere
# GeForce whitepapers, FP32-accumulate rates), RTX A6000, A40, T4, V100 SXM2).
GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("a100-40gb", 40960, 312, 312, 19.5, 1555),
        GpuSpec("a100-80gb", 81920, 312, 312, 19.5, 2039),
        GpuSpec("h100", 81559, 989, 989, 67, 3350),
        GpuSpec("h200", 143771, 989, 989, 67, 4800),
        GpuSpec("l4", 23034, 121, 121, 30.3, 300),
        GpuSpec("l40s", 46068, 362, 362, 91.6, 864),
        GpuSpec("rtx4090", 24564, 165, 165, 82.6, 1008),
        GpuSpec("rtx3090", 24576, 71, 71, 35.6, 936),
        GpuSpec("a6000", 49140, 155, 155, 38.7, 768),
        GpuSpec("a40", 46068, 150, 150, 37.4, 696),
        GpuSpec("t4", 15360, None, 65, 8.1, 320),
        GpuSpec("v100", 32768, None, 125, 15.7, 900),
    )
}
ALIASES = {"h100-80gb": "h100", "h100-sxm": "h100", "h200-141gb": "h200", "4090": "rtx4090", "3090": "rtx3090"}
AMBIGUOUS = {"a100": ("a100-40gb", "a100-80gb")}

GPU_UTILISATION = 0.40  # model FLOPs utilisation of an HF Trainer step (assumed; see docs/plan.md)
# Fractions of the measured matmul peak a CPU training step reaches in forward and in backward matmuls (the
# backward's transposed operands and autograd's bookkeeping cost more), fitted by tuneforge.plan.check on this
# repository's 2-core EPYC (docs/plan.md).
CPU_UTILISATION = 0.9
CPU_BACKWARD_UTILISATION = 0.6
CUDA_CONTEXT = 0.5 * GIB  # CUDA context, cuBLAS workspace and allocator slack per GPU (assumed)
# Peak RSS of a tuneforge training process whose model is negligible (a 2-layer, 32-wide model with the embedded
# tokenizer), measured by tuneforge.plan.check: Python, torch, transformers, peft, the data and the Trainer.
CPU_FRAMEWORK = 620 * MIB
# glibc's malloc keeps what a step's activations freed, and the next step's activations are partly laid out anew:
# a CPU process's RSS settles (from the second step on) at about this fraction of (activations + loss) above
# what the moments of one step add up to (measured by tuneforge.plan.check: LoRA 1.13, full fine-tuning 0.92).
CPU_ALLOCATOR_RETENTION = 1.0


@dataclass(frozen=True)
class Hardware:
    kind: Literal["cpu", "gpu"]
    name: str
    count: int
    memory: float  # bytes per device
    flops: dict[str, float]  # dtype name -> peak FLOP/s per device
    bandwidth: float  # bytes/s per device
    utilisation: float  # of the peak, in forward matmuls
    framework: float  # bytes the runtime holds per device before any model
    retention: float = 0.0  # extra RSS kept by the allocator, as a fraction of activations + loss (CPU)
    backward_utilisation: float = 0.0  # of the peak, in backward matmuls (0: as forward)

    def __post_init__(self) -> None:
        if not self.backward_utilisation:
            object.__setattr__(self, "backward_utilisation", self.utilisation)

    threads: int = 0
    source: str = ""
    dequant_per_s: float = 0.0  # 4-bit weights dequantised per second (CPU: measured with bitsandbytes)

    def peak(self, precision_act: int) -> float:
        return self.flops["fp32"] if precision_act == 4 else self.flops["bf16"]


def gpu(name: str, count: int = 1, memory_gib: float | None = None) -> Hardware:
    key = re.sub(r"[\s_]+", "-", name.strip().lower())
    key = ALIASES.get(key, key)
    if key in AMBIGUOUS:
        raise PlanError(f"--gpu {name!r} is ambiguous: {' or '.join(AMBIGUOUS[key])}")
    spec = GPUS.get(key)
    if spec is None:
        raise PlanError(f"--gpu {name!r} is not in the GPU table; known: {', '.join(GPUS)} (docs/plan.md)")
    if count <= 0:
        raise PlanError(f"--gpus {count}: give 1 or more GPUs")
    if memory_gib is not None and memory_gib <= 0:
        raise PlanError(f"--gpu-memory {memory_gib}: must be positive (GiB)")
    bf16 = spec.bf16_tflops if spec.bf16_tflops is not None else spec.fp16_tflops
    return Hardware(
        kind="gpu",
        name=spec.name,
        count=count,
        memory=memory_gib * GIB if memory_gib else spec.memory_mib * MIB,
        flops={"fp32": spec.fp32_tflops * 1e12, "bf16": bf16 * 1e12},
        bandwidth=spec.bandwidth_gbs * 1e9,
        utilisation=GPU_UTILISATION,
        framework=CUDA_CONTEXT,
        source="datasheet (GPU table)",
        dequant_per_s=spec.bandwidth_gbs * 1e9 / 2.5,  # bandwidth-bound: read 0.5 B, write 2 B per weight
    )


def this_machine(threads: int | None = None, measure: bool = True) -> Hardware:
    """The GPUs torch sees, else this CPU with its FLOP/s and memory bandwidth measured now."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        match = next((k for k in GPUS if k.split("-")[0] in props.name.lower().replace(" ", "")), None)
        if match is None:
            raise PlanError(f"this machine's GPU {props.name!r} is not in the GPU table; name one with --gpu")
        return gpu(match, torch.cuda.device_count(), props.total_memory / GIB)
    return cpu(threads=threads, measure=measure)


def cpu(
    cores: int | None = None, ram_gib: float | None = None, threads: int | None = None, measure: bool = True
) -> Hardware:
    """This CPU (or one with `cores` cores and `ram_gib` of memory, scaled from this CPU's per-core speed)."""
    import psutil

    here = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores is not None and cores <= 0:
        raise PlanError(f"--cores {cores}: give 1 or more cores")
    if ram_gib is not None and ram_gib <= 0:
        raise PlanError(f"--ram {ram_gib}: must be positive (GiB)")
    used = threads or here
    fp32, bf16, bandwidth, dequant = _probe(used) if measure else (50e9 * used, 1e9 * used, 10e9, 2e8)
    scale = (cores / here) if cores else 1.0
    from tuneforge.utils.cpu import cpu_name  # torch loads with it: only when this machine is asked about

    name = cpu_name()
    return Hardware(
        kind="cpu",
        name=name if cores is None else f"{cores}-core CPU (scaled from {name})",
        count=1,
        memory=ram_gib * GIB if ram_gib else float(psutil.virtual_memory().total),
        flops={"fp32": fp32 * scale, "bf16": bf16 * scale},
        bandwidth=bandwidth,
        utilisation=CPU_UTILISATION,
        backward_utilisation=CPU_BACKWARD_UTILISATION,
        framework=CPU_FRAMEWORK,
        retention=CPU_ALLOCATOR_RETENTION,
        threads=cores or used,
        source=f"measured now ({used} thread{'s' if used > 1 else ''})" if measure else "not measured",
        dequant_per_s=dequant * scale,
    )


def _probe(threads: int) -> tuple[float, float, float, float]:
    """(fp32 matmul FLOP/s, bf16 matmul FLOP/s, memory bandwidth B/s, 4-bit dequantised values/s) measured now."""
    import torch

    from tuneforge.utils.cpu import matmul_flops

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fp32 = matmul_flops(torch.float32, size=768, seconds=0.5)
        bf16 = matmul_flops(torch.bfloat16, size=256, seconds=0.2)
        bandwidth = _bandwidth()
        dequant = _dequant_rate()
    finally:
        torch.set_num_threads(before)
    return fp32, bf16, bandwidth, dequant


def _bandwidth(mb: int = 64, seconds: float = 0.3) -> float:
    """Bytes/s of c = a + b over arrays far larger than the caches (two reads, one write per element)."""
    import torch

    n = mb * MIB // 4
    a, b, c = torch.ones(n), torch.ones(n), torch.empty(n)
    torch.add(a, b, out=c)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.add(a, b, out=c)
        reps += 1
    return 3 * n * 4 * reps / (time.perf_counter() - start)


def _dequant_rate(n: int = 1 << 20) -> float:
    """4-bit NF4 values bitsandbytes dequantises per second here (0 when bitsandbytes is not installed)."""
    try:
        import torch
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit
    except ImportError:
        return 0.0
    w = torch.randn(1024, n // 1024)
    q, state = quantize_4bit(w, quant_type="nf4", compress_statistics=True)
    dequantize_4bit(q, state)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.2:
        dequantize_4bit(q, state)
        reps += 1
    return n * reps / (time.perf_counter() - start)
