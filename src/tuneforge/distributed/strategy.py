"""`distributed` → the TrainingArguments fields that turn on DDP, FSDP2 or DeepSpeed ZeRO.

transformers and accelerate do the work (DDP wrapping, FSDP2's fully_shard, the DeepSpeed engine); this is the
one builder of their settings from our config, so each YAML key has one meaning on every machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config import DistributedConfig
from tuneforge.distributed import DistributedError
from tuneforge.distributed.env import World
from tuneforge.distributed.group import backend_for_device
from tuneforge.runs import RunDir


def deepspeed_config(d: DistributedConfig) -> dict[str, Any]:
    """The DeepSpeed JSON for distributed; "auto" values are filled by transformers' DeepSpeed
    integration from TrainingArguments (batch size, accumulation, clipping, precision, optimizer, scheduler)."""
    zero: dict[str, Any] = {
        "stage": d.zero_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if d.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if d.zero_stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            # the adapter / model saved at the end is whole, not one shard per rank
            stage3_gather_16bit_weights_on_model_save=True,
        )
        if d.offload:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


def fsdp_config(d: DistributedConfig) -> dict[str, Any]:
    """transformers' fsdp_config for FSDP2: one FSDP unit per decoder layer (the model's _no_split_modules)."""
    return {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": d.shard != "grad_op",
        "cpu_offload": d.offload,
        # the adapter / model saved at the end is gathered whole on rank 0
        "state_dict_type": "FULL_STATE_DICT",
    }


def check_strategy(d: DistributedConfig, world: World) -> None:
    """Refuse a sharding strategy this machine cannot run, before anything loads.

    torch's FSDP2 itself runs on CPU with gloo, but accelerate (1.15) turns FSDP and DeepSpeed on only for
    accelerator process groups (CUDA, XPU, NPU ...): on CPU the Trainer would silently train plain DDP instead.
    """
    if not world.distributed or d.strategy == "ddp":
        return
    import torch

    if not torch.cuda.is_available():
        raise DistributedError(
            f"distributed.strategy={d.strategy} needs GPUs: accelerate shards with FSDP / DeepSpeed only on "
            "accelerator process groups, and on CPU would train plain DDP instead; use strategy ddp on CPU "
            "(docs/scale.md)"
        )
    if d.strategy == "deepspeed":
        require_deepspeed()


def trainer_kwargs(d: DistributedConfig, world: World) -> dict[str, Any]:
    """TrainingArguments fields for this run; {} for a single process."""
    if not world.distributed:
        return {}
    check_strategy(d, world)
    kwargs: dict[str, Any] = {"ddp_backend": backend_for_device()}
    if d.strategy == "fsdp":
        kwargs.update(fsdp=True, fsdp_config=fsdp_config(d))
        if d.shard == "hybrid":
            kwargs["parallelism_config"] = hybrid_mesh(world)
    elif d.strategy == "deepspeed":
        kwargs["deepspeed"] = d.deepspeed_config or deepspeed_config(d)
    return kwargs


def hybrid_mesh(world: World) -> Any:
    """HSDP: shard within a machine, replicate across machines (accelerate's ParallelismConfig 2-D mesh)."""
    from accelerate.parallelism_config import ParallelismConfig

    nodes = world.world_size // world.local_world_size
    if nodes * world.local_world_size != world.world_size or nodes < 2:
        raise DistributedError(
            f"distributed.shard=hybrid shards within a machine and replicates across machines: it needs 2 or "
            f"more machines with the same process count (here {world.world_size} processes, "
            f"{world.local_world_size} per machine); use shard=full on one machine"
        )
    return ParallelismConfig(dp_replicate_size=nodes, dp_shard_size=world.local_world_size)


def require_deepspeed() -> None:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise DistributedError(
            "distributed.strategy=deepspeed needs DeepSpeed: pip install 'tuneforge[deepspeed]' "
            "(DS_BUILD_OPS=0 builds its kernels on first use)"
        ) from None


def write_deepspeed_json(d: DistributedConfig, run: RunDir) -> None:
    """The DeepSpeed JSON a run used, beside its config.yaml (the user's own file as it is)."""
    if d.strategy != "deepspeed":
        return
    import json

    data = deepspeed_config(d)
    if d.deepspeed_config:
        data = json.loads(Path(d.deepspeed_config).expanduser().read_text(encoding="utf-8"))
    run.write_json(run.deepspeed, data)
