"""plots.plot_loss: the loss curve, and for DP-SGD runs the ε spent per step on a second axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

from tuneforge.utils import plots


def test_dp_run_plot_carries_epsilon_axis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"step": s, "loss": 1.0 / s, "epsilon_prv": 0.1 * s, "epsilon_rdp": 0.15 * s} for s in range(1, 8)]
    seen: list[list[str]] = []
    real_close = plt.close

    def close(fig: Any) -> None:  # look at the figure before it is closed
        seen.append([ax.get_ylabel() for ax in fig.axes])
        legend = fig.axes[0].get_legend()
        seen.append([t.get_text() for t in legend.get_texts()])
        real_close(fig)

    monkeypatch.setattr(plt, "close", close)
    assert plots.plot_loss(rows, tmp_path / "dp.png", "dp").is_file()  # type: ignore[union-attr]
    assert seen[0] == ["loss", "ε spent"]
    assert "ε spent (PRV)" in seen[1] and "ε spent (RDP)" in seen[1]
    plain = [{"step": s, "loss": 1.0 / s} for s in range(1, 8)]
    assert plots.plot_loss(plain, tmp_path / "plain.png", "plain") is not None
    assert seen[2] == ["loss"]
