"""Peak memory of this process: host RSS (ru_maxrss) and, for a model on CUDA, the device's allocator peak.

Foundation code: bench, sweep and compare each measure their own child process with it.
"""

from __future__ import annotations

import resource
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cuda_peak_mb(device: Any) -> float | None:
    """torch.cuda.max_memory_allocated on `device` in MB (RSS does not see device memory); None off CUDA."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


__all__ = ["cuda_peak_mb", "peak_rss_mb"]
