"""Which process of which job this is, from the launcher's environment variables.

torchrun, `accelerate launch` and Ray Train set RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE /
MASTER_ADDR / MASTER_PORT. Slurm's `srun` sets only SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID /
SLURM_NTASKS_PER_NODE: `adopt_slurm` copies them to torch's names, because neither torch's env:// rendezvous
nor accelerate reads Slurm's (the gap this fills); MASTER_ADDR / MASTER_PORT come from the sbatch script
(docs/scale.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from tuneforge.distributed import DistributedError

TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
SLURM_VARS = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"}


@dataclass(frozen=True, kw_only=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launcher: str = "none"  # torchrun | slurm | none

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int(env: Mapping[str, str], key: str) -> int:
    value = env[key]
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {key}={value!r} is not an integer") from None


def _local_world_size(env: Mapping[str, str]) -> int:
    if "LOCAL_WORLD_SIZE" in env:
        return _int(env, "LOCAL_WORLD_SIZE")
    # Slurm writes tasks per node as "8" or "8(x2)" (8 tasks on each of 2 nodes)
    per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0].split(",")[0]
    return int(per_node) if per_node.isdigit() else 1


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """This process's place in the job: torch's variables first, else Slurm's, else a single process."""
    env = os.environ if env is None else env
    if all(k in env for k in TORCH_VARS):
        names, launcher = {k: k for k in TORCH_VARS}, "torchrun"
    elif all(v in env for v in SLURM_VARS.values()):
        names, launcher = SLURM_VARS, "slurm"
    else:
        return World()
    world = World(
        rank=_int(env, names["RANK"]),
        world_size=_int(env, names["WORLD_SIZE"]),
        local_rank=_int(env, names["LOCAL_RANK"]),
        local_world_size=_local_world_size(env),
        launcher=launcher,
    )
    if not 0 <= world.rank < world.world_size or world.world_size < 1:
        raise DistributedError(
            f"launcher variables say rank {world.rank} of world size {world.world_size}: "
            "a rank must lie in 0 … world size - 1"
        )
    return world


def adopt_slurm(env: MutableMapping[str, str] | None = None) -> World:
    """Under `srun` without torch's variables, write RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE from
    Slurm's, so torch.distributed and accelerate see the job; MASTER_ADDR and MASTER_PORT must be set."""
    env = os.environ if env is None else env
    world = world_from_env(env)
    if world.launcher != "slurm":
        return world
    if world.distributed:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise DistributedError(
                f"running under Slurm (SLURM_NTASKS={world.world_size}) but {' and '.join(missing)} "
                "is not set: export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) and "
                "MASTER_PORT=29500 in the sbatch script (docs/scale.md)"
            )
    env.update(
        RANK=str(world.rank),
        WORLD_SIZE=str(world.world_size),
        LOCAL_RANK=str(world.local_rank),
        LOCAL_WORLD_SIZE=str(world.local_world_size),
    )
    return world
