"""`tuneforge plan`: will a fine-tuning run fit, and how long will it take — from a model's config.json alone.

- `shapes.py`: a Llama-family model's shapes from its config.json (or a preset), and the module/parameter
  skeleton peft and tuneforge's methods would see, without any weights;
- `trainable.py`: what each method of the METHODS table trains, counted from those shapes as peft counts it
  (its rules in `trainable_weights.py` and `trainable_prompt.py`, their shared types in `adaptation.py`);
- `activations.py`: the bytes autograd keeps per layer and token (a measured, documented per-layer formula);
- `memory.py`: weights, adapter, gradients, optimizer state, activations, KV cache, per device and strategy;
- `hardware.py`: this machine (detected, measured matmul FLOP/s) or a named GPU from a documented table;
- `timing.py`: FLOPs per step and time per epoch;
- `planner.py`: the plan, its verdict and the cheapest change that makes it fit; `report.py` prints it;
- `check.py`: `python -m tuneforge.plan.check`, predicted against measured on the embedded model.

docs/plan.md holds the formulas, the tables and the measurements.
"""

from __future__ import annotations

from tuneforge.errors import TuneforgeError


class PlanError(TuneforgeError, ValueError):
    """A plan that cannot be made as asked: an unknown preset, method or GPU, a bad length or batch size."""


__all__ = ["PlanError"]
