"""One benchmark run in its own process: `python -m tuneforge.bench.worker SPEC.json RESULT.json`.

A process per method makes the peak RSS (ru_maxrss of this process) belong to that method alone. The
spec is a full config mapping; the result is a JSON record (an "error" key if anything failed).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from tuneforge.utils.memory import peak_rss_mb

log = logging.getLogger("tuneforge.bench")


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB; None where /proc is not available."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        return True
    except OSError:
        return False


def model_bytes(model: Any) -> int:
    """Bytes held by the model's parameters and buffers (shared storage counted once; 4-bit weights packed)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        key = t.data_ptr()
        if key in seen or t.device.type == "meta":
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


class Measure(TrainerCallback):
    """Memory of the training phase alone and of the whole process so far, the model's bytes, and the FLOPs of
    one more step.

    At the start of training the RSS high-water mark is reset (after imports, loading and quantising), so
    `train_peak_rss_mb` is the peak while training; `peak_rss_mb` (ru_maxrss) includes loading.
    """

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self._reset = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.record["load_peak_rss_mb"] = round(peak_rss_mb(), 1)
        self.record["train_start_rss_mb"] = _status_mb("VmRSS")
        self._reset = reset_peak_rss()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        self.record["peak_rss_mb"] = round(peak_rss_mb(), 1)  # before saving, evaluating, counting FLOPs
        hwm = _status_mb("VmHWM") if self._reset else None
        self.record["train_peak_rss_mb"] = round(hwm, 1) if hwm is not None else None
        self.record["model_mb"] = round(model_bytes(model) / 2**20, 1)
        loader = kwargs.get("train_dataloader")
        if loader is None:
            return
        try:
            self.record["flops_per_step"] = count_step_flops(model, next(iter(loader)))
        except Exception as e:  # a FLOP count that fails must not lose the run
            self.record["flops_error"] = f"{type(e).__name__}: {e}"


def count_step_flops(model: Any, batch: dict[str, Any]) -> int:
    """FLOPs of one forward + backward pass on one training batch (torch's FlopCounterMode, aten-level ops:
    matmuls and attention; custom kernels such as bitsandbytes' 4-bit matmul are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss = model(**batch).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return int(counter.get_total_flops())


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    from tuneforge.eval import evaluate
    from tuneforge.stages import load_config, run_stage

    started = time.perf_counter()
    cfg = load_config(spec["config"], spec.get("overrides", []))
    measure = Measure()
    result = run_stage(cfg, callbacks=[measure])
    record: dict[str, Any] = {
        "steps": result.steps,
        "train_s": result.seconds,
        "tokens_per_s": result.tokens_per_s,
        "final_loss": result.train_loss,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "run_dir": str(result.run_dir),
        **measure.record,
    }
    if cfg.eval.tasks:
        task = cfg.eval.tasks[0]
        out = Path(result.run_dir) / "eval" / "bench"
        report = evaluate(cfg, runs=[result.run_dir], output_dir=out, progress=False)
        name = task.name or Path(task.path).stem
        label = Path(result.run_dir).name
        metric = task.metrics[0] if task.metrics else None
        record["score"] = report.score(name, label, metric)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    return record


def main(argv: list[str]) -> int:
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    from tuneforge.utils.logs import offline_env, setup_logging

    offline_env()
    setup_logging(False)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    try:
        record = run_one(spec)
        code = 0
    except Exception as e:  # reported as the method's failed row
        record = {"error": f"{type(e).__name__}: {e}".strip()[:500], "traceback": traceback.format_exc()}
        code = 1
    record["peak_rss_process_mb"] = round(peak_rss_mb(), 1)
    result_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
