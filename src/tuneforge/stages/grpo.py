"""Reinforcement fine-tuning: sample answers to prompts, score them with rewards, move the policy (docs/rl.md).

TRL's GRPOTrainer (group-relative advantages; `grpo.loss_type` dapo, grpo, dr_grpo, …) or, with
`grpo.algorithm: rloo`, its RLOOTrainer (leave-one-out baseline), both on plain `generate`. The rewards come
from the REWARDS table (stages/rewards.py) with their weights; TRL logs each one's mean and std, the total
reward, the share of groups whose answers all scored alike (`frac_reward_zero_std`: no learning signal), the
KL (when `grpo.beta` > 0) and the completion lengths, which RunMetrics writes to metrics.jsonl. Every
`grpo.log_completions_every` steps the sampled answers and their rewards go to completions.jsonl.

With an adapter method and beta > 0 the reference is the adapter-free base: TRL keeps a frozen copy of the
freshly initialised adapter (LoRA: exactly the base), as in dpo; beta 0 (the default) needs no reference pass.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tuneforge.config import ConfigError, RunConfig
from tuneforge.data.prompts import build_prompts
from tuneforge.runs import RunDir
from tuneforge.stages.common import RunResult, training_arguments
from tuneforge.stages.rewards import RewardContext, build_rewards, reward_columns
from tuneforge.stages.skeleton import build_trainer, drop_reference_adapter, finish, load_trainable, prepare, train

log = logging.getLogger("tuneforge.train")
# The run folder's file of sampled answers. runs.RunDir names the other files; until it names this one
# (RunDir.completions), the stage that writes it does.


def run(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> RunResult:
    # prepare: data, then the rewards (your own files are read here), before the policy loads
    job = prepare(cfg)
    data = build_prompts(cfg.data, job.tokenizer, reward_columns(cfg.grpo.rewards))
    log.info("data: %d prompts × %d answers each", len(data.train), cfg.grpo.num_generations)
    samples = CompletionLog(cfg.grpo.log_completions_every, [s.weight for s in cfg.grpo.rewards])
    rewards = build_rewards(RewardContext(cfg.grpo, cfg.model), samples.add)
    run_dir = job.open_run(data.stats)
    trainer_cls, args = trainer_and_args(cfg, run_dir)  # TRL's own batch checks, before the slow load
    model, counts = load_trainable(job)

    # build trainer
    samples.run_dir = run_dir
    trainer = build_trainer(
        trainer_cls, job, model, args, data.train, None, [samples, *callbacks], reward_funcs=rewards
    )

    # train, finish
    output = train(job, trainer)
    return finish(job, trainer, output, counts, data.stats, before_save=drop_reference_adapter)


def trainer_and_args(cfg: RunConfig, run_dir: RunDir) -> tuple[Any, Any]:
    """The TRL trainer class and its config for `grpo.algorithm` (the one builder of TRL's RL configs)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    g = cfg.grpo
    common: dict[str, Any] = {
        "num_generations": g.num_generations,
        "max_completion_length": g.max_completion_length,
        "beta": g.beta,
        "temperature": g.temperature,
        "top_p": g.top_p,
        "reward_weights": [spec.weight for spec in g.rewards],
        "log_completions": False,  # TRL's copy needs rich or wandb; ours is completions.jsonl
        "gradient_checkpointing": cfg.train.gradient_checkpointing,  # TRL's default is on
        "train_sampling_strategy": "random",  # prompts have no lengths to group by
    }
    if g.algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        trainer_cls: Any = RLOOTrainer
        args_cls: Any = RLOOConfig
        extra: dict[str, Any] = {}
    else:
        from trl import GRPOConfig, GRPOTrainer

        trainer_cls, args_cls = GRPOTrainer, GRPOConfig
        extra = {"loss_type": g.loss_type, "scale_rewards": g.scale_rewards}
    try:
        args = training_arguments(cfg, run_dir, False, args_cls, **common, **extra)
    except ValueError as e:  # TRL's checks that need the process count (global batch vs num_generations)
        raise ConfigError(f"grpo: TRL's {args_cls.__name__} refuses these settings: {e}") from None
    return trainer_cls, args


class CompletionLog(TrainerCallback):
    """Collects each step's sampled answers and their rewards (the reward functions report them through `add`)
    and writes them to completions.jsonl every `every` steps (and at step 1), for a person to read."""

    def __init__(self, every: int, weights: Sequence[float]) -> None:
        self.every = every
        self.weights = list(weights)
        self.run_dir: RunDir | None = None
        self._step = -1
        self._rows: list[dict[str, Any]] = []

    def add(
        self, label: str, step: int, prompts: list[Any], answers: list[str], sources: Any, values: list[float]
    ) -> None:
        if not self.every:
            return
        if step != self._step:  # the first reward of a new generation batch
            self._step = step
            self._rows = [
                {"step": step, "source": src, "prompt": _prompt_text(p), "answer": a, "rewards": {}}
                for p, a, src in zip(prompts, answers, sources or [None] * len(prompts), strict=True)
            ]
        for row, value in zip(self._rows, values, strict=True):
            row["rewards"][label] = value

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        step = state.global_step
        if not (self.every and self.run_dir is not None and self.run_dir.writes and self._rows):
            return
        if self._rows[0]["step"] != step or (step % self.every and step != 1):
            return
        lines = []
        for row in self._rows:
            total = sum(w * v for w, v in zip(self.weights, row["rewards"].values(), strict=False))
            lines.append(json.dumps({**row, "reward": round(total, 6)}, ensure_ascii=False) + "\n")
        with self.run_dir.completions.open("a", encoding="utf-8") as f:
            f.writelines(lines)


def _prompt_text(prompt: Any) -> str:
    """The last user turn of a conversational prompt (the question a reader wants), or a text prompt as is."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(prompt)
