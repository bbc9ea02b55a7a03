"""The `privacy` section: DP-SGD fine-tuning on opacus (docs/privacy.md, "DP-SGD fine-tuning").

The section is off until `epsilon` (a budget; the noise is calibrated to spend it over the planned steps) or
`noise_multiplier` (a fixed noise; ε is reported) is given. Which methods DP-SGD can train is said once here, in
`DP_METHODS`, by name: the method table lives in a higher layer, and a test keeps the two equal (every method is
either verified or refused with its reason). Every combination that would break per-sample gradients is refused
when the config loads (`privacy_refusal`), before anything is read or loaded.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from tuneforge.config.sections import DataConfig, DistributedConfig, MethodSection, ModelConfig, Section, TrainConfig

# The stages whose loss is a per-sample sum over the sample's own tokens (chat answers, plain text). The stage table
# gives them the section (`sections=("privacy",)`), which refuses it with every other stage.
DP_STAGES = ("sft", "pt")

# Methods whose per-sample gradients were checked against per-sample autograd (tests/test_privacy_dp.py, one
# DP step with noise 0 and no clipping equals the plain step). The value: None for opacus' own layer hooks,
# "replayed" where tuneforge recomputes the PEFT layer per sample with torch.func (privacy/dp_grads.py), whose
# dropout must then be 0 (the recomputation cannot see the forward pass's dropout mask).
VERIFIED: dict[str, Literal["hooks", "replayed"]] = {
    "full": "hooks",
    "freeze": "hooks",
    "galore": "hooks",
    "apollo": "hooks",
    "lora": "hooks",
    "rslora": "hooks",
    "pissa": "hooks",
    "olora": "hooks",
    "lora_plus": "hooks",
    "qlora": "hooks",
    "dora": "replayed",
    "lokr": "replayed",
    "vera": "replayed",
    "ia3": "replayed",
    "ln_tuning": "replayed",
    "bitfit": "hooks",
    "series_adapter": "hooks",
    "parallel_adapter": "hooks",
    "prefix_tuning": "hooks",
    "p_tuning_v2": "hooks",
    "boft": "replayed",
    "hra": "replayed",
    "fourierft": "replayed",
}
# Methods DP-SGD refuses, and why (what was found when their per-sample gradients were checked).
REFUSED: dict[str, str] = {
    "adalora": "its rank allocation scores importance from the raw, unclipped gradients of every step and prunes "
    "ranks by them, a use of the private data outside DP-SGD's guarantee; use lora",
    "loha": "PEFT computes its Hadamard weight in a custom autograd.Function that torch.func cannot run per "
    "sample, and opacus has no grad sampler for it; use lokr or lora",
    "oft": "opacus refuses its rotation module (it holds buffers, which opacus' per-sample hooks do not support); "
    "use boft or lora",
    "prompt_tuning": "PEFT embeds the virtual tokens once and broadcasts them over the batch, so opacus cannot tell "
    "the samples' gradients apart; use prefix_tuning or lora",
    "p_tuning": "PEFT encodes the virtual tokens once and broadcasts them over the batch, so opacus cannot tell "
    "the samples' gradients apart; use prefix_tuning or lora",
    "mpt": "PEFT builds its task prompts once and broadcasts them over the batch, so opacus cannot tell the "
    "samples' gradients apart; use prefix_tuning or lora",
}
# Settings of a "replayed" method (or of use_dora) that must be 0 under DP-SGD.
DROPOUT_FIELDS = ("dropout", "rank_dropout", "module_dropout")


class PrivacyConfig(Section):
    """DP-SGD (Abadi et al.) through opacus: every step Poisson-samples privacy units, clips each unit's gradient
    to `max_grad_norm`, adds Gaussian noise of std noise_multiplier × max_grad_norm, and the accountants count
    the (ε, δ) spent. Off until `epsilon` or `noise_multiplier` is set (exactly one of them).

    > The batch: each step samples every unit with probability train.batch_size × train.grad_accum / N (its
    > expected logical batch); train.batch_size is the most rows one forward pass holds. train.max_grad_norm
    > does not apply (the per-sample bound is privacy.max_grad_norm).
    """

    epsilon: float | None = Field(
        None,
        description="Target ε: the noise is calibrated so that the planned steps spend it, and training stops "
        "before any step that would exceed it.",
    )
    noise_multiplier: float | None = Field(
        None, description="Fixed noise std / max_grad_norm instead of a target ε (0: no privacy, ε = ∞)."
    )
    delta: float | None = Field(None, description="δ of the (ε, δ) guarantee (default: 1/N, N privacy units).")
    max_grad_norm: float = Field(1.0, gt=0, description="Per-unit gradient clipping bound C (L2 norm).")
    accountant: Literal["rdp", "prv"] = Field(
        "prv",
        description="Accountant that calibrates the noise and enforces the budget (opacus RDP or PRV); both ε are "
        "always reported.",
    )
    unit: Literal["sample", "user"] = Field(
        "sample",
        description="Privacy unit: sample (one record; copies made by mixing count as one) or user (every "
        "record of a user, named by user_column; one of the user's records is drawn when the user is sampled).",
    )
    user_column: str | None = Field(None, description="unit user: the data column naming each record's user.")

    @field_validator("epsilon")
    @classmethod
    def _epsilon(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError(f"epsilon must be > 0 (a privacy budget, e.g. 8, 3 or 1), got {v}")
        return v

    @field_validator("noise_multiplier")
    @classmethod
    def _noise(cls, v: float | None) -> float | None:
        if v is not None and not v >= 0:
            raise ValueError(f"noise_multiplier must be >= 0 (0 adds no noise: no privacy), got {v}")
        return v

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v < 1:
            raise ValueError(f"delta must lie strictly between 0 and 1 (customarily below 1/N), got {v}")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        # a section with only default values (a form writes every key) is off; any other setting needs the budget
        changed = {k for k in self.model_fields_set if getattr(self, k) != type(self).model_fields[k].default}
        if changed and (self.epsilon is None) == (self.noise_multiplier is None):
            given = "both" if self.epsilon is not None else "neither"
            raise ValueError(
                f"give exactly one of privacy.epsilon (a target budget) or privacy.noise_multiplier (a fixed noise), "
                f"got {given}"
            )
        if self.unit == "user" and not self.user_column:
            raise ValueError("unit user needs user_column: the data column that names each record's user")
        if self.unit == "sample" and self.user_column:
            raise ValueError(f"user_column={self.user_column!r} is read with unit user, but unit is 'sample'")
        return self

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None


def privacy_refusal(
    privacy: PrivacyConfig,
    method: MethodSection,
    train: TrainConfig,
    data: DataConfig,
    model: ModelConfig,
    distributed: DistributedConfig,
) -> str | None:
    """Why this run cannot train with DP-SGD as configured (checked at load), or None (also when privacy is off)."""
    if not privacy.enabled:
        return None
    why = _method_refusal(method)
    if why:
        return why
    if data.packing:
        return (
            "data.packing puts several samples in one row, so a row's gradient is no sample's own: per-sample "
            "clipping needs one sample per row (turn packing off)"
        )
    if train.gradient_checkpointing:
        return (
            "train.gradient_checkpointing recomputes the forward pass in backward, which opacus' per-sample hooks "
            "would record twice; turn it off (use a smaller train.batch_size and train.grad_accum instead)"
        )
    # by value, not by whether the key was written: a run's config.yaml spells out every default and must load again
    if train.max_grad_norm != type(train).model_fields["max_grad_norm"].default:
        return (
            "train.max_grad_norm clips the batch gradient; with privacy the per-sample clipping bound is "
            f"privacy.max_grad_norm (remove train.max_grad_norm={train.max_grad_norm})"
        )
    if model.dtype == "float16":
        return "model.dtype float16: per-sample gradients underflow in float16; use float32 or bfloat16"
    if distributed.backend == "ray" or distributed.strategy != "ddp":
        return (
            "DP-SGD runs in one process here (opacus' distributed optimizer and DPDDP are not wired into the "
            "Trainer); leave the distributed section out"
        )
    return None


def _method_refusal(method: MethodSection) -> str | None:
    name = method.name
    if name in REFUSED:
        return f"method {name!r} cannot train with privacy: {REFUSED[name]}"
    if name not in VERIFIED:
        return (
            f"method {name!r} has not been checked with DP-SGD (its per-sample gradients); use one of "
            f"{', '.join(VERIFIED)}"
        )
    settings: dict[str, Any] = method.model_dump()
    replayed = VERIFIED[name] == "replayed" or settings.get("use_dora")
    if settings.get("use_dora") and name == "qlora":
        return "method 'qlora' with use_dora cannot train with privacy: DoRA on 4-bit weights is not replayable"
    if replayed:
        for key in DROPOUT_FIELDS:
            if settings.get(key):
                return (
                    f"method.{key}={settings[key]} with privacy: tuneforge recomputes this method's layers per "
                    f"sample (privacy/dp_grads.py), which cannot replay the dropout mask; set method.{key}=0"
                )
    return None
