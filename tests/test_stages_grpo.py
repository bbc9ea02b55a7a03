"""Stage grpo on the tiny model: a 2-step run under a wall-clock watchdog (TRL's GRPOTrainer has an open report
of hanging on CPU, so the run is a child process with a timeout), a failing reward named end to end, the
prompts-only data builder, and a stage rm run as a reward model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.torch import load_file

from tests.test_stages_dpo import write_pairs
from tuneforge.config import DataConfig, GrpoConfig, RewardSpec, load
from tuneforge.data.prompts import build_prompts
from tuneforge.data.schema import DataError
from tuneforge.methods import METHOD_PARAMS
from tuneforge.stages import STAGES, run_stage
from tuneforge.stages.rewards import RewardContext, RewardError, build_rewards

WATCHDOG_S = 240  # a 2-step run takes ≈10 s on 2 cores; a hang fails the test instead of the suite
REPO = Path(__file__).resolve().parents[1]


def write_dates(path: Path, n: int = 8) -> Path:
    rows = [
        {"instruction": f"Write day {i + 1} of March 2021 as YYYY-MM-DD.", "output": f"2021-03-{i + 1:02d}"}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def grpo_cfg(tmp_path: Path, model_dir: Path, rewards: list[dict[str, Any]], **grpo: Any) -> Path:
    raw = {
        "name": "g",
        "stage": "grpo",
        "model": {"path": str(model_dir)},
        "data": {"datasets": [{"path": str(write_dates(tmp_path / "dates.jsonl")), "format": "alpaca"}]},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "logging_steps": 1, "threads": 1},
        "grpo": {
            "num_generations": 4,
            "max_completion_length": 8,
            "log_completions_every": 1,
            "rewards": rewards,
            **grpo,
        },
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def train_in_child(config: Path) -> subprocess.CompletedProcess[str]:
    """`tuneforge train` in a child process, killed by the watchdog if it hangs."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "tuneforge.cli", "train", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=WATCHDOG_S,
            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"stage grpo did not finish 2 steps within {WATCHDOG_S} s (hung?)")


def test_grpo_two_steps_change_the_adapter_and_log_rewards(tmp_path: Path, tiny_model_dir: Path) -> None:
    rewards_file = tmp_path / "my_rewards.py"
    rewards_file.write_text("def variety(answer, sample):\n    return len(set(answer)) / 10\n", encoding="utf-8")
    rewards = [
        {"file": str(rewards_file), "function": "variety"},  # random answers differ: a learning signal
        {"name": "exact_answer"},
        {"name": "regex", "pattern": r"\d{4}-\d{2}-\d{2}", "weight": 0.5},
    ]
    done = train_in_child(grpo_cfg(tmp_path, tiny_model_dir, rewards, beta=0.05))
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "g"
    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())  # B started at 0
    assert not (run / "adapter" / "ref").exists()  # TRL's reference copy (beta > 0) is not an output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in (
        "rewards/variety/mean",
        "rewards/variety/std",
        "rewards/exact_answer/mean",
        "rewards/regex/mean",
        "reward_std",
        "frac_reward_zero_std",
        "kl",
        "completions/mean_length",
        "loss",
    ):
        assert all(key in r and math.isfinite(r[key]) for r in steps), key
    samples = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and len(samples) == 8  # 4 answers per step
    first = samples[0]
    assert set(first["rewards"]) == {"variety", "exact_answer", "regex"}
    assert first["source"].startswith(str(tmp_path / "dates.jsonl")) and "March 2021" in first["prompt"]
    total = first["rewards"]["variety"] + first["rewards"]["exact_answer"] + 0.5 * first["rewards"]["regex"]
    assert first["reward"] == pytest.approx(total, abs=1e-5)
    assert json.loads((run / "result.json").read_text())["steps"] == 2
    assert (run / "plots" / "reward.png").stat().st_size > 0  # the reward curve a person watches


def test_a_reward_that_raises_stops_the_run_naming_function_and_sample(tmp_path: Path, tiny_model_dir: Path) -> None:
    rewards_file = tmp_path / "my_rewards.py"
    rewards_file.write_text("def picky(answer, sample):\n    raise KeyError('score')\n", encoding="utf-8")
    config = grpo_cfg(tmp_path, tiny_model_dir, [{"file": str(rewards_file), "function": "picky"}])
    with pytest.raises(RewardError) as caught:  # in this process: it fails at the first step's rewards
        run_stage(load(config, methods=METHOD_PARAMS, stages=STAGES))
    message = str(caught.value)
    assert "reward 'picky'" in message and f"{rewards_file}:2" in message and "KeyError" in message
    assert f"failed on sample {tmp_path / 'dates.jsonl'}:" in message


def test_prompts_keep_the_reference_and_drop_the_answer(tmp_path: Path, chatml_tokenizer: Any) -> None:
    cfg = DataConfig(datasets=[{"path": str(write_dates(tmp_path / "d.jsonl", 3)), "format": "alpaca"}])
    data = build_prompts(cfg, chatml_tokenizer, ["answer"])
    row = data.train[0]
    assert row["prompt"][-1]["role"] == "user" and "YYYY-MM-DD" in row["prompt"][-1]["content"]
    assert all(m["role"] != "assistant" for m in row["prompt"])
    assert row["answer"].startswith("2021-03-") and row["source"].startswith(str(tmp_path / "d.jsonl"))
    # prompts only, the reference in its own column (a number here: columns arrive as text)
    rows = [{"instruction": "What is 2 + 3?", "answer": 5, "level": "easy"}]
    (tmp_path / "q.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    cfg = DataConfig(datasets=[{"path": str(tmp_path / "q.jsonl"), "format": "alpaca"}])
    row = build_prompts(cfg, chatml_tokenizer, ["answer", "level"]).train[0]
    assert row["answer"] == "5" and row["level"] == "easy"
    with pytest.raises(DataError, match=r"q\.jsonl:.*no column 'difficulty', which a reward reads"):
        build_prompts(cfg, chatml_tokenizer, ["difficulty"])


def test_prompts_with_tools_are_rendered_with_them(tmp_path: Path, chatml_tokenizer: Any) -> None:
    tools = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    record = {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": tools}
    (tmp_path / "t.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    cfg = DataConfig(datasets=[{"path": str(tmp_path / "t.jsonl"), "format": "openai"}])
    row = build_prompts(cfg, chatml_tokenizer, ["tools"]).train[0]
    assert isinstance(row["prompt"], str) and "get_weather" in row["prompt"] and "Weather in Oslo?" in row["prompt"]
    assert json.loads(row["tools"])[0]["name"] == "get_weather"


def test_a_stage_rm_run_scores_answers(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = {
        "name": "rm",
        "stage": "rm",
        "model": {"path": str(tiny_model_dir)},
        "data": {"datasets": [{"path": str(write_pairs(tmp_path / "pairs.jsonl")), "format": "preference"}]},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 1, "batch_size": 4, "logging_steps": 1, "threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    rm_cfg = load(raw, methods=METHOD_PARAMS, stages=STAGES)
    rm_run = run_stage(rm_cfg).run_dir
    grpo = GrpoConfig(rewards=[RewardSpec(name="reward_model", run=str(rm_run))])
    (score,) = build_rewards(RewardContext(grpo, rm_cfg.model))
    prompts = [[{"role": "user", "content": "What is 2 plus 2?"}]] * 2
    answers = [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "five"}]]
    values = score(prompts=prompts, completions=answers, completion_ids=[[1], [2]], source=["a", "b"])
    assert len(values) == 2 and all(math.isfinite(v) for v in values) and values[0] != values[1]
    not_rm = GrpoConfig(rewards=[RewardSpec(name="reward_model", run=str(tmp_path))])
    with pytest.raises(RewardError, match="not a tuneforge run folder"):
        build_rewards(RewardContext(not_rm, rm_cfg.model))


def test_grpo_resumed_from_a_checkpoint_reproduces_the_uninterrupted_rewards(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A 4-step run with checkpoints at steps 2 and 4; then everything after step 2 is taken away (the state a
    crash right after the step-2 checkpoint leaves: checkpoint-4, the adapter and result.json gone, metrics.jsonl
    still holding steps 3-4) and `--resume` trains steps 3-4 again: they sample and score what the uninterrupted
    run did (the Trainer restores the sampling RNG), the metrics hold each step once, and the adapter is saved.
    (A real SIGKILL after a checkpoint: tests/test_sft.py; two children here instead of three keep it short.)"""
    import shutil

    rewards = [{"name": "regex", "pattern": r"\d"}, {"name": "length_penalty", "target": 4}]
    path = grpo_cfg(tmp_path, tiny_model_dir, rewards)
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(max_steps=4, save_steps=2)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    run = tmp_path / "runs" / "g"

    def rewards_by_step() -> list[tuple[int, float]]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["reward"]) for r in rows if "reward" in r]

    done = train_in_child(path)
    assert done.returncode == 0, done.stderr[-3000:]
    want = rewards_by_step()
    assert [s for s, _ in want] == [1, 2, 3, 4]
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run / "adapter")
    (run / "result.json").unlink()

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", "train", str(path), "--resume"],
        cwd=REPO, capture_output=True, text=True, timeout=WATCHDOG_S, env=env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-2" in resumed.stderr
    got = rewards_by_step()
    assert [s for s, _ in got] == [1, 2, 3, 4]  # steps 3-4 of the first run trimmed, then trained again
    assert [r for _, r in got] == pytest.approx([r for _, r in want], abs=1e-5)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
