"""The launch glue without starting processes: launcher variables (torchrun, Slurm), launch plans and their bad
input, sharding strategies refused where they cannot run, the DeepSpeed JSON, and hub ids from the HF cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import save_tiny
from tuneforge.config import ConfigError, DistributedConfig
from tuneforge.distributed import DistributedError
from tuneforge.distributed.env import World, adopt_slurm, world_from_env
from tuneforge.distributed.launch import LaunchPlan, split_master
from tuneforge.distributed.strategy import check_strategy, deepspeed_config, fsdp_config, trainer_kwargs
from tuneforge.stages import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_variables_win_over_slurm() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "SLURM_PROCID": "0"}
    env |= {"SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}
    assert world_from_env(env) == World(rank=3, world_size=4, local_rank=1, local_world_size=2, launcher="torchrun")


def test_no_launcher_is_one_process() -> None:
    world = world_from_env({})
    assert (world.rank, world.world_size, world.is_main, world.distributed) == (0, 1, True, False)


def test_slurm_variables_become_torch_variables() -> None:
    env = {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "8(x2)"}
    env |= {"MASTER_ADDR": "node01", "MASTER_PORT": "29500"}
    world = adopt_slurm(env)
    assert world == World(rank=9, world_size=16, local_rank=1, local_world_size=8, launcher="slurm")
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("9", "16", "1", "8")


def test_slurm_without_master_address_is_named() -> None:
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}
    with pytest.raises(DistributedError, match="MASTER_ADDR and MASTER_PORT is not set"):
        adopt_slurm(env)


def test_bad_launcher_values_are_named() -> None:
    with pytest.raises(DistributedError, match="RANK='x' is not an integer"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(DistributedError, match="rank 2 of world size 2"):
        world_from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (LaunchPlan(nproc=0), "--nproc 0"),
        (LaunchPlan(nproc=-2), "--nproc -2"),
        (LaunchPlan(nproc=2, nnodes=0), "--nnodes 0"),
        (LaunchPlan(nproc=2, nnodes=2, node_rank=2, master="10.0.0.1:29500"), "--node-rank 2"),
        (LaunchPlan(nproc=2, nnodes=2), "needs --master"),
        (LaunchPlan(nproc=2, master="10.0.0.1"), "ADDR:PORT"),
        (LaunchPlan(nproc=2, master="10.0.0.1:99999"), "ADDR:PORT"),
    ],
)
def test_bad_launch_plans_are_refused(plan: LaunchPlan, message: str) -> None:
    with pytest.raises(DistributedError, match=message):
        plan.check()


def test_a_port_in_use_is_refused() -> None:
    with socket.socket() as held:
        held.bind(("", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(DistributedError, match=f"port {port} is in use"):
            LaunchPlan(nproc=2, master=f"127.0.0.1:{port}").check()


def test_torchrun_flags_of_a_plan() -> None:
    one = LaunchPlan(nproc=2).torchrun_args()
    assert "--nproc-per-node=2" in one and "--rdzv-backend=c10d" in one and "--rdzv-endpoint=localhost:0" in one
    node1 = LaunchPlan(nproc=8, nnodes=2, node_rank=1, master="10.0.0.1:29500", run_id="job").torchrun_args()
    assert node1 == [
        "--nproc-per-node=8",
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=10.0.0.1:29500",
        "--rdzv-id=job",
        "--rdzv-conf=is_host=0",
    ]
    assert split_master("[::1]:29500") == ("::1", 29500)


def test_nproc_inside_a_launcher() -> None:
    from tuneforge.distributed.launch import refuse_nested

    slurm = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"}
    refuse_nested(LaunchPlan(nproc=8, nnodes=2, node_rank=1, master="10.0.0.1:29500"), slurm)  # a task per node
    with pytest.raises(DistributedError, match="already started by a launcher"):
        refuse_nested(LaunchPlan(nproc=8), slurm)
    with pytest.raises(DistributedError, match=r"torchrun: rank 0 of 2"):
        refuse_nested(LaunchPlan(nproc=2), {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    refuse_nested(LaunchPlan(nproc=2), {})


def test_cli_refuses_nproc_zero_and_nested_launch(tmp_path: Path) -> None:
    from tuneforge.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n", encoding="utf-8")
    assert main(["train", str(cfg), "--nproc", "0"]) == 2
    os.environ.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0")
    try:
        assert main(["train", str(cfg), "--nproc", "2"]) == 2
    finally:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            os.environ.pop(key)


def test_unknown_strategy_and_qlora_sharding_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"distributed\.strategy = 'zero'.*'ddp', 'fsdp' or 'deepspeed'"):
        load_config({}, ["distributed.strategy=zero"])
    with pytest.raises(ConfigError, match=r"method 'qlora' cannot train with distributed\.strategy='fsdp'"):
        load_config({}, ["method.name=qlora", "distributed.strategy=fsdp"])
    with pytest.raises(ConfigError, match="deepspeed_config is read with strategy deepspeed"):
        load_config({}, [f"distributed.deepspeed_config={__file__}"])
    assert load_config({}, ["method.name=qlora"]).distributed.strategy == "ddp"


def test_what_cpu_can_shard_and_what_it_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tuneforge.distributed.strategy import fsdp_on_cpu
    from tuneforge.stages.skeleton import check_method_shards

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    two = World(rank=0, world_size=2, local_world_size=2, launcher="torchrun")
    fsdp = DistributedConfig(strategy="fsdp")
    check_strategy(fsdp, two)  # FSDP2 over gloo
    assert fsdp_on_cpu(fsdp, two) and not fsdp_on_cpu(fsdp, World()) and not fsdp_on_cpu(DistributedConfig(), two)
    assert trainer_kwargs(fsdp, two)["fsdp_config"]["version"] == 2
    with pytest.raises(DistributedError, match="strategy=deepspeed needs GPUs here"):
        check_strategy(DistributedConfig(strategy="deepspeed"), two)
    with pytest.raises(DistributedError, match="offload=true on CPU: the sharded parameters already live in CPU"):
        check_strategy(DistributedConfig(strategy="fsdp", offload=True), two)
    with pytest.raises(DistributedError, match="shard=hybrid on CPU"):
        check_strategy(DistributedConfig(strategy="fsdp", shard="hybrid"), two)
    check_strategy(DistributedConfig(strategy="deepspeed"), World())  # one process: nothing to shard
    assert trainer_kwargs(DistributedConfig(), two) == {"ddp_backend": "gloo"}
    assert trainer_kwargs(fsdp, World()) == {}
    with pytest.raises(DistributedError, match=r"method 'lora_plus' builds its own optimizer.*strategy=ddp"):
        check_method_shards(load_config({}, ["method.name=lora_plus", "distributed.strategy=fsdp"]), two)
    check_method_shards(load_config({}, ["method.name=lora_plus"]), two)  # ddp takes it
    check_method_shards(load_config({}, ["method.name=lora", "distributed.strategy=fsdp"]), two)


def test_fsdp2_and_deepspeed_settings_follow_the_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    fsdp = fsdp_config(DistributedConfig(strategy="fsdp", shard="grad_op", offload=True))
    assert fsdp["version"] == 2 and fsdp["reshard_after_forward"] is False and fsdp["cpu_offload"] is True
    z2 = deepspeed_config(DistributedConfig(strategy="deepspeed"))["zero_optimization"]
    assert z2["stage"] == 2 and "offload_optimizer" not in z2
    z3 = deepspeed_config(DistributedConfig(strategy="deepspeed", zero_stage=3, offload=True))["zero_optimization"]
    assert z3["stage"] == 3 and z3["offload_param"]["device"] == "cpu" and z3["offload_optimizer"]["device"] == "cpu"
    assert z3["stage3_gather_16bit_weights_on_model_save"] is True
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    two = World(rank=0, world_size=2, local_world_size=2, launcher="torchrun")
    with pytest.raises(DistributedError, match=r"shard=hybrid .* 2 or more machines"):
        trainer_kwargs(DistributedConfig(strategy="fsdp", shard="hybrid"), two)
    pytest.importorskip("deepspeed")
    kwargs = trainer_kwargs(DistributedConfig(strategy="deepspeed", zero_stage=3), two)
    assert kwargs["deepspeed"]["zero_optimization"]["stage"] == 3 and kwargs["ddp_backend"] == "nccl"


def test_the_deepspeed_json_transformers_reads(tmp_path: Path) -> None:
    """The written JSON is one transformers' DeepSpeed integration accepts (its "auto" values filled)."""
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    ds = HfTrainerDeepSpeedConfig(deepspeed_config(DistributedConfig(strategy="deepspeed", zero_stage=3)))
    assert ds.is_zero3() and ds.get_value("zero_optimization.stage") == 3
    from tuneforge.distributed.strategy import write_deepspeed_json
    from tuneforge.runs import RunDir

    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 2}}), encoding="utf-8")
    run = RunDir(tmp_path)
    write_deepspeed_json(DistributedConfig(strategy="deepspeed", deepspeed_config=str(own)), run)
    assert json.loads(run.deepspeed.read_text())["zero_optimization"] == {"stage": 2}


def fake_hub_cache(cache: Path, repo: str) -> Path:
    """The layout huggingface_hub's cache uses: models--org--name/{refs/main, snapshots/<commit>/files}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    save_tiny(root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit, encoding="utf-8")
    return root / "snapshots" / commit


RESOLVE = """
import sys
from tuneforge.config import ModelConfig
from tuneforge.models import ModelError
from tuneforge.models.loader import load_tokenizer, resolve_model_path
try:
    print(resolve_model_path(ModelConfig(path=sys.argv[1])), len(load_tokenizer(ModelConfig(path=sys.argv[1]))))
except ModelError as e:
    print("ModelError:", e)
"""


def test_hub_id_resolves_from_the_local_cache_only(tmp_path: Path) -> None:
    snapshot = fake_hub_cache(tmp_path / "hub", "tiny-org/tiny-chat")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}

    def resolve(repo: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", RESOLVE, repo], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert resolve("tiny-org/tiny-chat").split()[0] == str(snapshot)
    missing = resolve("tiny-org/not-cached")
    assert "not in the local Hugging Face cache" in missing and "model.download=true" in missing
