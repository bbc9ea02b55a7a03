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

    FSDP2 runs on CPU process groups (gloo) through `cpu_fsdp_trainer`; DeepSpeed only on GPUs here (docs/scale.md).
    """
    if not world.distributed or d.strategy == "ddp":
        return
    import torch

    if torch.cuda.is_available():
        if d.strategy == "deepspeed":
            require_deepspeed()
        return
    if d.strategy == "deepspeed":
        raise DistributedError(
            "distributed.strategy=deepspeed needs GPUs here: its CPU path (DeepSpeed's CPU accelerator over gloo) "
            "is not tested by tuneforge; on CPU use strategy fsdp (FSDP2 over gloo) or ddp (docs/scale.md)"
        )
    if d.offload:
        raise DistributedError(
            "distributed.offload=true on CPU: the sharded parameters already live in CPU memory (FSDP2's "
            "CPUOffloadPolicy moves them off an accelerator and pins host memory for it); drop offload on CPU"
        )
    if d.shard == "hybrid":
        raise DistributedError(
            "distributed.shard=hybrid on CPU: accelerate checks its 2-D device mesh before tuneforge can turn its "
            "FSDP2 path on for a CPU process group (accelerate/parallelism_config.py:390); use shard=full or "
            "grad_op on CPU, hybrid on GPU machines (docs/scale.md)"
        )


def fsdp_on_cpu(d: DistributedConfig, world: World) -> bool:
    """Whether this run shards with FSDP2 on a CPU process group (gloo), through `cpu_fsdp_trainer`."""
    if not world.distributed or d.strategy != "fsdp":
        return False
    import torch

    return not torch.cuda.is_available()


def cpu_fsdp_trainer(trainer_class: type[Any]) -> type[Any]:
    """`trainer_class` whose Accelerator runs accelerate's own FSDP2 path on a CPU process group.

    The gap this fills: accelerate 1.15 turns FSDP on only for accelerator process groups. AcceleratorState sets
    `distributed_type = FSDP` and keeps the Trainer's `fsdp_plugin` only in its branch for MULTI_GPU / MULTI_XPU /
    MULTI_NPU / ... (accelerate/state.py:986-1016); MULTI_CPU, what a gloo group on CPU is, is not in that list,
    so the plugin is dropped and `prepare()` wraps the model in DistributedDataParallel instead
    (accelerator.py:2058). torch's FSDP2 (`fully_shard`) itself runs on CPU over gloo. Right after the Trainer
    builds its Accelerator (before anything reads it: the Trainer's and TRL's `is_fsdp_enabled` decisions come
    later in `__init__`), this does what that branch does for accelerators: the state's distributed type (copied into
    PartialState's shared state too, as state.py:1037 does), the plugin built from the same TrainingArguments,
    its mixed precision. Everything after is accelerate's and the
    Trainer's FSDP2 code, unchanged: `fsdp2_prepare_model` (`fully_shard` per decoder layer, then the root),
    `get_state_dict`, `save_fsdp_model` / `load_fsdp_model` and the optimizer's for checkpoints and resume.
    """

    class CpuFsdpTrainer(trainer_class):  # type: ignore[misc,valid-type]
        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            from accelerate import PartialState
            from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

            state = self.accelerator.state
            if state.distributed_type != DistributedType.MULTI_CPU:
                raise DistributedError(
                    f"FSDP2 on CPU expects accelerate's MULTI_CPU process group, found {state.distributed_type}"
                )
            plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            if state.mixed_precision != "no":
                plugin.set_mixed_precision(state.mixed_precision)  # as accelerate/state.py:1014-1015 does
            state.distributed_type = DistributedType.FSDP
            state.fsdp_plugin = plugin
            # and into PartialState's shared state, as state.py:1037 does: every later AcceleratorState() call
            # copies PartialState's values over its own (state.py:919), which would turn the type back to MULTI_CPU
            PartialState().distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True

    return CpuFsdpTrainer


def shard_summary(model: Any, world: World) -> str:
    """What FSDP2 holds where: the share of parameter elements that are sharded DTensors, and each rank's local
    part (a collective: every rank calls it)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()  # parameters gathered by a last forward (shard grad_op) back to their shards
    total = sharded = local = 0
    for p in model.parameters():
        total += p.numel()
        if isinstance(p, DTensor):
            sharded += p.numel()
            local += p.to_local().numel()
    held: list[int] = [0] * world.world_size
    dist.all_gather_object(held, local)
    ranks = ", ".join(f"rank {r} holds {n}" for r, n in enumerate(held))
    return (
        f"FSDP2 shards {sharded} of {total} parameter elements ({100 * sharded / max(total, 1):.0f}%) over "
        f"{world.world_size} processes: {ranks}"
    )


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
