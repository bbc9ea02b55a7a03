"""FSDP2 on 2 CPU processes (gloo) through the real launcher, on the tiny model: the parameters really are
sharded (DTensors, about half of each on every rank), the losses equal one process's with the same global
batch, and rank 0 saves a whole, loadable adapter (equal to the one-process adapter) or full model; a TRL stage
(DPO) killed after a checkpoint of the sharded run (accelerate's FSDP checkpoint, full state dicts) resumes to
the uninterrupted losses."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.test_distributed_runs import ENV, KILLER, ROOT, tuneforge, write
from tests.test_sft import losses, make_cfg
from tests.test_stages_dpo import dpo_cfg

SHARDS = re.compile(
    r"FSDP2 shards (\d+) of (\d+) parameter elements \(\d+%\) over 2 processes: rank 0 holds (\d+), rank 1 holds (\d+)"
)


def check_sharded(stderr: str) -> None:
    assert re.search(r"trained data-parallel: fsdp over 2 processes \(model wrapped as FSDP\w+\)", stderr), stderr
    found = SHARDS.search(stderr)
    assert found, stderr[-3000:]
    sharded, total, rank0, rank1 = map(int, found.groups())
    assert sharded == total > 0  # every parameter is a DTensor
    assert rank0 + rank1 == sharded and abs(rank0 - rank1) <= 0.05 * total  # each rank holds about half


@pytest.mark.slow  # three process starts (launcher + 2 workers) and a reference run
def test_fsdp_on_two_cpu_processes_shards_trains_like_one_process_and_saves_the_adapter(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    train = {"max_steps": 4, "logging_steps": 1, "save_steps": 2}
    raw = make_cfg(tmp_path, tiny_model_dir, name="fsdp", train={**train, "batch_size": 2})
    raw["distributed"] = {"strategy": "fsdp"}
    done = tuneforge("train", str(write(tmp_path, raw)), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: 4 steps") == 1
    check_sharded(done.stderr)
    one = write(tmp_path, make_cfg(tmp_path, tiny_model_dir, name="one", train={**train, "batch_size": 4}))
    assert tuneforge("train", str(one)).returncode == 0
    runs = tmp_path / "runs"
    got, want = losses(runs / "fsdp"), losses(runs / "one")
    assert [s for s, _ in got] == [1, 2, 3, 4]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4)
    assert (runs / "fsdp" / "checkpoints" / "checkpoint-2").is_dir()  # accelerate's FSDP checkpoint path ran
    # rank 0 saved the gathered adapter: whole tensors, the one-process adapter's values
    sharded = load_file(str(runs / "fsdp" / "adapter" / "adapter_model.safetensors"))
    single = load_file(str(runs / "one" / "adapter" / "adapter_model.safetensors"))
    assert sharded.keys() == single.keys() and len(sharded) > 0
    for name, tensor in single.items():
        assert sharded[name].shape == tensor.shape, name
        torch.testing.assert_close(sharded[name], tensor, rtol=1e-3, atol=1e-5, msg=name)
    assert any(float(t.abs().sum()) > 0 for n, t in sharded.items() if "lora_B" in n)  # trained, not the init
    from peft import PeftModel

    from tuneforge.config import ModelConfig
    from tuneforge.models.loader import load_model

    PeftModel.from_pretrained(load_model(ModelConfig(path=str(tiny_model_dir))), runs / "fsdp" / "adapter")


@pytest.mark.slow  # three process starts
def test_fsdp_full_fine_tuning_saves_a_whole_loadable_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, name="full", method={"name": "full"})
    raw["train"] = {**raw["train"], "max_steps": 2, "batch_size": 2, "lr": 1e-3}
    raw["distributed"] = {"strategy": "fsdp", "shard": "grad_op"}
    path = write(tmp_path, raw)
    raw["method"] = {"name": "full"}  # write() sets a LoRA dropout the full method does not have
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    done = tuneforge("train", str(path), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    check_sharded(done.stderr)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "runs" / "full" / "model").state_dict()
    assert saved.keys() == base.keys()
    assert all(saved[k].shape == base[k].shape for k in base)  # gathered whole, not one rank's shard
    assert any(not torch.equal(saved[k], base[k]) for k in base)  # and trained


@pytest.mark.slow  # a killed and a resumed 2-process run, and a one-process reference
def test_fsdp_dpo_killed_after_a_checkpoint_resumes_to_the_uninterrupted_losses(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    train = {"max_steps": 4, "save_steps": 2, "logging_steps": 1}
    raw = dpo_cfg(tmp_path, tiny_model_dir, name="crash", train={**train, "batch_size": 2})
    raw["distributed"] = {"strategy": "fsdp"}
    crash = write(tmp_path, raw)
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER).replace("global_step == 6", "global_step == 2"), encoding="utf-8")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    killed = subprocess.run(
        [*torchrun, str(script), str(crash)], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert killed.returncode != 0
    run = tmp_path / "runs" / "crash"
    checkpoint = run / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file() and not (run / "adapter").exists()

    done = tuneforge("train", str(crash), "--resume", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    check_sharded(done.stderr)
    one = write(tmp_path, dpo_cfg(tmp_path, tiny_model_dir, name="one", train={**train, "batch_size": 4}))
    assert tuneforge("train", str(one)).returncode == 0
    got, want = losses(run), losses(tmp_path / "runs" / "one")
    assert [s for s, _ in got] == [1, 2, 3, 4]  # steps 3-4 by the resumed run, from step 2's state
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4)
    # rank 0 saved the trained adapter gathered whole, without TRL's reference copy
    sharded = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    single = load_file(str(tmp_path / "runs" / "one" / "adapter" / "adapter_model.safetensors"))
    assert sharded.keys() == single.keys()  # no reference adapter, nothing missing
    for name, tensor in single.items():
        # Per tensor, not per element: 2 ranks × batch 2 reduce the gradient in another order than 1 × 4, and Adam
        # turns a sign flip of a near-zero gradient into an lr-sized step of that element (seen on Zen 3, not on
        # Zen 4); a wrong or missing gather differs by the tensor's whole size.
        rel = float((sharded[name] - tensor).norm() / tensor.norm().clamp_min(1e-12))
        assert rel < 1e-2, (name, rel)
