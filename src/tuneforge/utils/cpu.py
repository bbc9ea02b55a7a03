"""CPU matmul paths: the oneDNN fp32 route (checked for accuracy before use), native bf16 support, matmul peaks.

On x86 CPUs torch sends fp32 matmuls to MKL by default. `torch.backends.mkldnn.matmul.fp32_precision = "bf16"`
routes them to oneDNN instead, which is faster on many CPUs; on CPUs with bf16 units it may really compute in
bf16, so the route is used only after a start-up check shows it fp32-accurate on this CPU.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("tuneforge.cpu")

# Relative error (max |a@b - exact| / max |exact|) an fp32 matmul may show; bf16 shows ~1e-3.
FP32_TOLERANCE = 1e-5


def _relative_error(size: int = 256) -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    exact = a.double() @ b.double()
    return float(((a @ b).double() - exact).abs().max() / exact.abs().max())


def _onednn_knob() -> object | None:
    mkldnn = getattr(torch.backends, "mkldnn", None)
    matmul = getattr(mkldnn, "matmul", None)
    if mkldnn is None or not mkldnn.is_available() or matmul is None or not hasattr(matmul, "fp32_precision"):
        return None
    return matmul


@dataclass(frozen=True)
class Fp32Route:
    used: bool
    reason: str
    error: float | None = None  # relative error of the oneDNN route in the check


def use_onednn_fp32(enabled: bool) -> Fp32Route:
    """Route fp32 matmuls through oneDNN if `enabled` and it stays fp32-accurate here; else the default path.

    Process-wide (a torch backend flag), so the last call wins; it returns what was decided and why.
    """
    knob = _onednn_knob()
    if knob is None:
        return Fp32Route(False, "this torch build has no oneDNN fp32 matmul setting")
    if not enabled:
        knob.fp32_precision = "none"  # type: ignore[attr-defined]
        return Fp32Route(False, "off (train.onednn_fp32=false)")
    knob.fp32_precision = "bf16"  # type: ignore[attr-defined]
    error = _relative_error()
    if error > FP32_TOLERANCE:
        knob.fp32_precision = "none"  # type: ignore[attr-defined]
        log.warning("oneDNN fp32 matmul deviates from fp32 here (relative error %.1e): default path kept", error)
        return Fp32Route(False, f"deviates from fp32 (relative error {error:.1e})", error)
    return Fp32Route(True, f"fp32-accurate (relative error {error:.1e})", error)


def native_bf16() -> bool:
    """Whether oneDNN computes bf16 matmuls natively here (AVX512-BF16 / AMX); elsewhere bf16 is emulated, slowly."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def matmul_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a square matmul in `dtype` on the current threads and backend flags."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    a @ b  # warm-up: kernel selection, page faults
    reps, start = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * size**3 * reps / elapsed


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), what a measured time was measured on."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        info = ""
    for line in info.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "CPU"


__all__ = ["FP32_TOLERANCE", "Fp32Route", "cpu_name", "matmul_flops", "native_bf16", "use_onednn_fp32"]
