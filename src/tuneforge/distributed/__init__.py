"""Launch glue for many processes and machines, on the engines the field trusts (docs/scale.md).

- `env.py`: which process this is (torchrun / accelerate / Ray variables, Slurm's when torch's are missing);
- `launch.py`: `tuneforge train|eval --nproc N` re-launching itself through torchrun's own API (c10d rendezvous);
- `group.py`: the process group (gloo on CPU, NCCL on GPUs), barriers, rank-0-first sections;
- `strategy.py`: `distributed` → TrainingArguments' DDP / FSDP2 / DeepSpeed settings;
- `ray_train.py`: `distributed.backend: ray` through Ray Train's TorchTrainer.

Nothing here talks to other processes itself: torch.distributed does, and torchrun or Ray start the processes.
"""

from __future__ import annotations

from tuneforge.errors import TuneforgeError


class DistributedError(TuneforgeError, ValueError):
    """A launch that cannot work as asked: bad process counts, a port in use, a rank that failed."""


__all__ = ["DistributedError"]
