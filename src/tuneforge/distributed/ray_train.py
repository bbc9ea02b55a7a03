"""`distributed.backend: ray`: the run as a Ray Train job (`ray.train.torch.TorchTrainer`) on a running
cluster (`ray start --head` here, or a cluster's head node).

Ray starts the workers, sets up the torch process group (gloo on CPU, NCCL with distributed.use_gpu) and
the launcher variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR); each worker then trains exactly as a
torchrun worker does. What is here: the config shipped to the workers, their working folder, and a failed
worker's error brought back as one message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.distributed import DistributedError

Worker = Callable[[dict[str, Any]], object]


def _import_ray() -> Any:
    try:
        import ray
        import ray.train.torch
    except ImportError:
        raise DistributedError("distributed.backend=ray needs Ray Train: pip install 'tuneforge[ray]'") from None
    return ray


def _loop(config: dict[str, Any]) -> None:
    """One Ray worker: the stage's run (its result is rank 0's result.json in the run folder)."""
    os.chdir(config["cwd"])  # relative data and model paths mean what they meant where the command ran
    config["worker"](config["raw"])


def run_on_ray(cfg: RunConfig, worker: Worker) -> None:
    """Train `cfg` on distributed.workers Ray workers with `worker` (the CLI's stage runner)."""
    ray = _import_ray()
    from ray.train import RunConfig as RayRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    d = cfg.distributed
    try:
        ray.init(address=d.ray_address, ignore_reinit_error=True, log_to_driver=True)
    except ConnectionError as e:
        raise DistributedError(
            f"distributed.ray_address={d.ray_address!r}: no Ray cluster there ({e}); start one with "
            "`ray start --head` (docs/scale.md)"
        ) from None
    raw = cfg.model_dump(mode="json")
    raw["output"]["dir"] = str(Path(cfg.output.dir).resolve())
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"raw": raw, "cwd": os.getcwd(), "worker": worker},
        torch_config=TorchConfig(backend="nccl" if d.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=d.workers, use_gpu=d.use_gpu),
        run_config=RayRunConfig(name=f"tuneforge-{cfg.name}"),
    )
    try:
        trainer.fit()
    except Exception as e:  # Ray wraps a worker's exception in its own error types
        raise DistributedError(f"Ray Train job failed: {_worker_message(e)}") from None


def _worker_message(error: BaseException) -> str:
    """The failed worker's own message, out of Ray's wrappers (TrainingFailedError → WorkerGroupError)."""
    failures = getattr(error, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        rank, cause = sorted(failures.items())[0]
        return f"worker {rank}: {type(cause).__name__}: {cause}"
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
