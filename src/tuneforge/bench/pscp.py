"""PSCP, PEFT-Bench's efficiency-aware score (Belanec et al., 2025, "PEFT Soft Score Penalties").

    PSCP = P · (1 + params/Cp)^-β · (1 + FLOPs/Cf)^-β · (1 + mem/Cm)^-β

P is the task score (0-1), params the trainable parameters, FLOPs the FLOPs of one training step (forward +
backward, counted by torch.utils.flop_counter.FlopCounterMode) and mem the peak RSS in MB. The paper's own
constants were not available offline here; the ones below are tuneforge's choice, sized for ~100M-parameter
models on a CPU (a penalty term halves at params = 3·Cp, FLOPs = 3·Cf, mem = 3·Cm when β = 0.5), and every
benchmark output logs the constants it used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PscpConstants:
    cp: float = 1e7  # trainable parameters
    cf: float = 1e12  # FLOPs of one training step
    cm: float = 2048.0  # peak RSS, MB
    beta: float = 0.5

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PSCP = PscpConstants()


def pscp(score: float, params: float, flops: float, mem_mb: float, c: PscpConstants = DEFAULT_PSCP) -> float:
    """The score discounted by soft penalties on trainable parameters, FLOPs and memory."""
    penalty = (1 + params / c.cp) ** -c.beta * (1 + flops / c.cf) ** -c.beta * (1 + mem_mb / c.cm) ** -c.beta
    return score * penalty
