"""2-process runs on the tiny model through the real launchers (gloo on CPU): `tuneforge train --nproc 2` for sft
and dpo, the same losses as one process with the same global batch, rank 0 the only writer, a killed run resumed
(same and different process count), a failing rank's error, a world the data cannot feed, Ray Train."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.test_sft import losses, make_cfg
from tests.test_stages_dpo import dpo_cfg

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def write(tmp_path: Path, raw: dict) -> Path:
    raw["train"] = {**raw["train"], "threads": 1}
    raw.setdefault("method", {})["dropout"] = 0.0  # dropout draws differ per process; the sums are compared
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def tuneforge(*args: str, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", *args], env=ENV, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow  # three process starts (launcher + 2 workers) and a reference run: ≈40 s on 2 cores
def test_sft_on_two_processes_equals_one_process_with_the_same_global_batch(tmp_path: Path, tiny_model_dir: Path):
    train = {"max_steps": 4, "logging_steps": 1}
    two = write(tmp_path, make_cfg(tmp_path, tiny_model_dir, name="two", train={**train, "batch_size": 2}))
    one = write(tmp_path, make_cfg(tmp_path, tiny_model_dir, name="one", train={**train, "batch_size": 4}))
    done = tuneforge("train", str(two), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: 4 steps") == 1  # one summary line per job
    assert "trained data-parallel: ddp over 2 processes (model wrapped as DistributedDataParallel)" in done.stderr
    # the plain loss of a data-parallel run is said once, as information: nothing for the user to fix
    assert done.stderr.count("label-only chunked loss: off (2 processes") == 1
    assert " W tuneforge." not in done.stderr, done.stderr[-3000:]
    assert tuneforge("train", str(one)).returncode == 0
    runs = tmp_path / "runs"
    got, want = losses(runs / "two"), losses(runs / "one")
    assert [s for s, _ in got] == [1, 2, 3, 4]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4)
    # rank 0 alone wrote the folder: one record per step, one result, one adapter
    rows = [json.loads(line) for line in (runs / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert json.loads((runs / "two" / "result.json").read_text())["steps"] == 4
    assert (runs / "two" / "adapter" / "adapter_model.safetensors").is_file()
    assert (runs / "two" / "plots" / "loss.png").is_file()


@pytest.mark.slow  # ≈30 s on 2 cores
def test_dpo_on_two_processes(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = dpo_cfg(tmp_path, tiny_model_dir, name="dpo2", train={"max_steps": 2, "batch_size": 2, "logging_steps": 1})
    raw["data"]["val_size"] = 4  # held-out pairs: scored before and after, by every rank, written by rank 0
    done = tuneforge("train", str(write(tmp_path, raw)), "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "dpo2"
    assert len(losses(run)) == 2 and (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "preference_eval.json").is_file()


def test_a_world_the_data_cannot_feed_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, name="big", train={"max_steps": 2, "batch_size": 16})
    done = tuneforge("train", str(write(tmp_path, raw)), "--nproc", "2")
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank ") and "failed with exit code 2" in last
    assert "24 training samples cannot fill one step of 2 processes × train.batch_size=16 = 32 samples" in last


def test_deepspeed_on_cpu_is_refused_before_anything_loads(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, name="ds", train={"max_steps": 2, "batch_size": 2})
    done = tuneforge("train", str(write(tmp_path, raw)), "distributed.strategy=deepspeed", "--nproc", "2")
    assert done.returncode == 2 and "strategy=deepspeed needs GPUs here" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "runs" / "ds").exists()


# Started by the external launcher (torchrun's own command): rank 0 dies right after the checkpoint of step 6,
# once every rank has written its part of it.
KILLER = """
import os, signal, sys
import torch.distributed as dist
from transformers import TrainerCallback
from tuneforge.cli import load_config
from tuneforge.stages import run_stage

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == 6:
            dist.barrier()
            if dist.get_rank() == 0:
                os.kill(os.getpid(), signal.SIGKILL)

run_stage(load_config(sys.argv[1], []), callbacks=[KillAfterSave()])
"""


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_losses(tmp_path: Path, tiny_model_dir: Path) -> None:
    train = {"max_steps": 8, "save_steps": 3, "batch_size": 2, "logging_steps": 1, "lr": 5e-3}
    ref = write(tmp_path, make_cfg(tmp_path, tiny_model_dir, name="ref", train=train))
    crash = write(tmp_path, make_cfg(tmp_path, tiny_model_dir, name="crash", train=train))
    assert tuneforge("train", str(ref), "--nproc", "2").returncode == 0
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER), encoding="utf-8")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    killed = subprocess.run([*torchrun, str(script), str(crash)], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode != 0
    run = tmp_path / "runs" / "crash"
    assert (run / "checkpoints" / "checkpoint-6").is_dir() and not (run / "adapter").exists()
    other = tmp_path / "runs" / "crash-one"  # the same checkpoint, resumed by one process
    shutil.copytree(run, other)
    (other / "config.yaml").write_text((run / "config.yaml").read_text().replace("name: crash", "name: crash-one"))

    done = tuneforge("train", str(crash), "--resume", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    got, want = losses(run), losses(tmp_path / "runs" / "ref")
    assert [s for s, _ in got] == list(range(1, 9))
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4)

    done = tuneforge("train", str(crash), "name=crash-one", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [s for s, _ in losses(other)] == list(range(1, 9))  # steps 7-8 by one process, from step 6's state
    assert (other / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_ray_train_backend_runs_two_workers(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("ray.train.torch")
    if shutil.which("ray") is None:
        pytest.skip("the ray command is not installed")
    short = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    ray_env = {**ENV, "RAY_TMPDIR": str(short), "RAY_DISABLE_USAGE_STATS": "1"}
    head = ["ray", "start", "--head", "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={short}"]
    started = subprocess.run(head, env=ray_env, capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.skip(f"ray start --head failed here: {started.stderr[-500:]}")
    try:
        raw = make_cfg(tmp_path, tiny_model_dir, name="ray2", train={"max_steps": 2, "batch_size": 2})
        raw["distributed"] = {"backend": "ray", "workers": 2}
        done = subprocess.run(
            [sys.executable, "-m", "tuneforge.cli", "train", str(write(tmp_path, raw))],
            env=ray_env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "done on Ray: 2 steps" in done.stdout
        assert len(losses(tmp_path / "runs" / "ray2")) == 2
    finally:
        subprocess.run(["ray", "stop", "--force"], env=ray_env, capture_output=True, timeout=120)
        shutil.rmtree(short, ignore_errors=True)
