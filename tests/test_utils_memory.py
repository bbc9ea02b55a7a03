"""utils.memory: the peak RSS of this process, and the CUDA allocator's peak only for a CUDA device."""

from __future__ import annotations

import pytest
import torch

from tuneforge.utils.memory import cuda_peak_mb, peak_rss_mb


def test_peak_rss_is_this_process_in_mb() -> None:
    assert 10 < peak_rss_mb() < 1024 * 1024


def test_cuda_peak_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cuda_peak_mb("cpu") is None and cuda_peak_mb(torch.device("cpu")) is None
    seen = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: seen.append(d) or 3 * 2**20)
    assert cuda_peak_mb("cuda:0") == 3.0 and seen == [torch.device("cuda:0")]
