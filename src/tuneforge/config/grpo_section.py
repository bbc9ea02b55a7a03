"""The `grpo` section: reinforcement fine-tuning on sampled answers scored by rewards (TRL's GRPO / RLOO).

The reward names are those of the REWARDS table (`tuneforge.stages.rewards`, a test keeps them equal): the
config sits below the stage layer, so it names them here to refuse a typo before anything loads. Which settings
apply to which reward is said once, in `REWARD_PARAMS`. docs/rl.md explains each reward.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from tuneforge.config.sections import DataConfig, Section, TrainConfig
from tuneforge.utils.names import did_you_mean

# reward name -> the settings it reads besides `name` and `weight` (the REWARDS table's rows; kept equal by a test)
REWARD_PARAMS: dict[str, tuple[str, ...]] = {
    "exact_answer": ("column", "tolerance"),
    "regex": ("pattern", "match"),
    "format": ("pattern", "match"),
    "tool_call_valid": (),
    "length_penalty": ("target",),
    "reward_model": ("run",),
    "python": ("file", "function", "column"),
}
REWARD_NAMES = tuple(REWARD_PARAMS)

# TRL's GRPOConfig.loss_type values (trl 1.16; GRPOTrainer refuses others).
GrpoLoss = Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
# `format` without a pattern: DeepSeek-R1's layout, reasoning then the answer.
THINK_ANSWER = r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*"


class RewardSpec(Section):
    """One reward function of the REWARDS table (or `file` + `function`: your own), with its weight."""

    name: str = Field(description="A reward of the table (docs/rl.md); `python` (implied by `file`) for your own.")
    weight: float = Field(1.0, description="Weight of this reward in the sum the advantages are computed from.")
    column: str | None = Field(
        None, description="exact_answer / python: the dataset column holding the reference (default: answer)."
    )
    tolerance: float = Field(1e-4, ge=0, description="exact_answer: relative tolerance of a numeric answer.")
    pattern: str | None = Field(
        None, description="regex (required) / format (default: <think>…</think><answer>…</answer>): a Python regex."
    )
    match: Literal["full", "search"] = Field(
        "full", description="regex / format: the whole answer must match (full), or any part of it (search)."
    )
    target: int | None = Field(
        None, gt=0, description="length_penalty: tokens allowed free; the penalty grows to -1 at the length limit."
    )
    run: str | None = Field(None, description="reward_model: a finished run folder of stage rm.")
    file: str | None = Field(None, description="python: a .py file defining the reward function.")
    function: str | None = Field(None, description="python: the function's name in `file` (see docs/rl.md).")

    @model_validator(mode="before")
    @classmethod
    def _python_by_file(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "file" in raw and "name" not in raw:
            return {"name": "python", **raw}
        return raw

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in REWARD_PARAMS:
            raise ValueError(f"unknown reward {v!r}{did_you_mean(v, REWARD_NAMES)}; allowed: {', '.join(REWARD_NAMES)}")
        return v

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid Python regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _params_apply(self) -> Self:
        own = REWARD_PARAMS[self.name]
        for key in sorted(self.model_fields_set - {"name", "weight"} - set(own)):
            users = [n for n, params in REWARD_PARAMS.items() if key in params]
            raise ValueError(f"reward {self.name!r} takes no `{key}` (it is a setting of {', '.join(users)})")
        if self.name == "regex" and not self.pattern:
            raise ValueError("reward 'regex' needs a `pattern` (a Python regular expression)")
        if self.name == "reward_model" and not self.run:
            raise ValueError("reward 'reward_model' needs `run`: the folder of a finished stage rm run")
        if self.name == "python" and not (self.file and self.function):
            raise ValueError("your own reward needs `file` (a .py file) and `function` (its name there)")
        if self.file is not None and not Path(self.file).expanduser().is_file():
            raise ValueError(f"reward file {self.file!r} does not exist")
        if self.run is not None and not Path(self.run).expanduser().is_dir():
            raise ValueError(f"reward model run folder {self.run!r} does not exist")
        return self

    @property
    def label(self) -> str:
        """The name in logs and completions.jsonl: the reward's, or your function's."""
        return self.function if self.name == "python" and self.function else self.name


class GrpoConfig(Section):
    """Settings of the `grpo` stage: sample `num_generations` answers per prompt, score them with `rewards`, and
    move the policy towards the better ones (TRL's GRPOTrainer, or RLOOTrainer with `algorithm: rloo`).

    > Defaults that differ from TRL's GRPOConfig: num_generations 4 (TRL: 8) and max_completion_length 128
    > (TRL: 512), sized for a CPU; the learning rate is train.lr (TRL: 1e-6); loss_type dapo and beta 0 as TRL.
    """

    algorithm: Literal["grpo", "rloo"] = Field(
        "grpo", description="grpo: group-normalised advantages (GRPOTrainer); rloo: leave-one-out baseline (RLOO)."
    )
    rewards: list[RewardSpec] = Field(default_factory=list, description="Reward functions and weights (docs/rl.md).")
    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt (the group of GRPO).")
    max_completion_length: int = Field(128, gt=0, description="Tokens generated per answer at most.")
    beta: float = Field(0.0, ge=0, description="KL penalty towards the adapter-free base (0: no reference pass).")
    loss_type: GrpoLoss = Field("dapo", description="algorithm grpo: TRL's loss (dapo, grpo, dr_grpo, bnpo, ...).")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="algorithm grpo: divide advantages by the group's reward std, the batch's, or none."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the answers.")
    log_completions_every: int = Field(
        10, ge=0, description="Write the sampled answers and their rewards to completions.jsonl every N steps (0: off)."
    )

    @model_validator(mode="after")
    def _length_target(self) -> Self:
        for spec in self.rewards:
            if spec.target is not None and spec.target >= self.max_completion_length:
                raise ValueError(
                    f"length_penalty target={spec.target} must be below grpo.max_completion_length="
                    f"{self.max_completion_length} (answers are cut there)"
                )
        return self

    @model_validator(mode="after")
    def _rloo_settings(self) -> Self:
        if self.algorithm == "rloo":
            for key in ("loss_type", "scale_rewards"):
                if key in self.model_fields_set:
                    raise ValueError(f"`{key}` applies to algorithm grpo; RLOO has its own leave-one-out loss")
        return self


def grpo_refusal(grpo: GrpoConfig, train: TrainConfig, data: DataConfig) -> str | None:
    """Why a stage grpo run cannot train as configured (checked at load), or None.

    TRL samples one generation batch of batch_size × grad_accum completions per process and splits it into groups
    of num_generations answers to one prompt, so that product must be a multiple of num_generations (with several
    processes TRL checks the product times the process count when the trainer is built)."""
    if not grpo.rewards:
        return "stage grpo needs at least one reward in grpo.rewards (docs/rl.md lists them)"
    per_step = train.batch_size * train.grad_accum
    if per_step % grpo.num_generations:
        fits = [n for n in range(2, per_step + 1) if per_step % n == 0]
        return (
            f"grpo.num_generations={grpo.num_generations} does not divide train.batch_size × train.grad_accum = "
            f"{train.batch_size} × {train.grad_accum} = {per_step} completions per step: every prompt's group must be "
            f"whole; use num_generations in {', '.join(map(str, fits)) or '(none)'} or a batch that it divides"
        )
    if data.val_size:
        return (
            "stage grpo does not evaluate while training (it would sample num_generations answers per validation "
            "prompt); leave data.val_size at 0 and measure held-out accuracy with `tuneforge eval` (docs/rl.md)"
        )
    return None
