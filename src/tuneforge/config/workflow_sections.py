"""The sections of the workflows beside training: `lab:`, `bench:`, `prepare:`, and how their verbs load a config.

`tuneforge lab knowledge`, `tuneforge bench methods|speed` and `tuneforge data prepare` read a RunConfig like
`tuneforge train` does (`[CONFIG] [key=value ...]`). A setting that training has too keeps training's name
(`method.r`, `train.lr`, `data.cutoff_len`, `rag.top_k`, ...); only what no other workflow has lives in these
sections. Where a verb's default differs from RunConfig's (the lab trains at lr 1e-3, the methods bench
for 30 steps), the verb's PRESETS fill the keys that neither the config file nor an override sets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from tuneforge.config.sections import ConfigError, Section
from tuneforge.config.stage_sections import InputStyle


def _comma_list(v: Any) -> Any:
    """`bench.methods=lora,dora` reads as one YAML string: split it like the old comma-separated flags."""
    return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v


class LabConfig(Section):
    """`tuneforge lab knowledge`: fine-tuning vs retrieval on facts the model cannot know (docs/rag.md).

    Settings the lab shares with training use training's keys: model.path, method.* (the LoRA fine-tunes),
    train.* (epochs, lr, batch_size, max_steps, threads, seed: also the fictional world's seed),
    data.cutoff_len (tokens per pre-training block), rag.retriever, rag.top_k, rag.chunk_* (the index),
    eval.bootstrap, eval.seed and eval.batch_size (the scoring).

    > Defaults that differ from RunConfig's (LAB_PRESETS): method.r=16, method.alpha=32, train.epochs=8,
    > train.lr=1e-3, train.lr_scheduler=constant_with_warmup, train.warmup_ratio=0.05, train.logging_steps=5,
    > train.seed=0, eval.seed=0, data.cutoff_len=128, rag.top_k=3.
    """

    out: str = Field("runs/lab-knowledge", description="Output folder of the lab, never overwritten.")
    entities: int = Field(30, ge=4, description="Fictional world: people, 4 facts each (3 distractors per question).")
    paraphrases: int = Field(3, ge=0, le=3, description="Fictional world: rewrites of each biography (0-3).")
    docs: str | None = Field(None, description="Your documents (a file or folder) instead of the fictional world.")
    questions: str | None = Field(
        None, description="Your questions, JSONL: question, choices, answer [, gold_chunks] (with lab.docs)."
    )
    paraphrased: str | None = Field(
        None, description="Your paraphrase-augmented documents (with lab.docs): adds the ft_paraphrase arms."
    )


class BenchConfig(Section):
    """`tuneforge bench methods` (docs/bench_methods.md) and `tuneforge bench speed` (docs/speed.md).

    Every run of a benchmark is this config (model.*, train.*, data.cutoff_len, ...) with what the benchmark
    varies set per run. Shared keys: model.path, train.max_steps (optimiser steps; speed: one epoch over
    max_steps x batch_size samples), train.batch_size, train.lr (methods: full-weight methods train at lr / 10),
    train.seed, train.threads, data.cutoff_len; methods: eval.limit (held-out items scored); speed:
    data.val_size (held-out samples for the loss after training).

    > Defaults that differ from RunConfig's: methods (BENCH_METHODS_PRESETS) train.max_steps=30,
    > train.lr=1e-3, train.lr_scheduler=constant, data.cutoff_len=128, eval.limit=40;
    > speed (BENCH_SPEED_PRESETS) train.max_steps=12, data.cutoff_len=512, data.val_size=16.
    """

    methods: list[str] = Field(
        ["lora", "qlora", "dora", "ia3", "bitfit", "prompt_tuning"],
        description="methods: the methods trained and compared (also 'lora,dora').",
    )
    repeats: int = Field(2, ge=0, description="speed: hf / tuneforge pairs, run alternating (0: none).")
    ablation: list[str] = Field(
        ["tf_plain", "+group_by_length", "+packing", "+label_only_logits", "+onednn_fp32"],
        description="speed: variants run once each (names in docs/speed.md; [] for none).",
    )
    eval_items: int = Field(40, ge=0, description="speed: CommonsenseQA items of the scoring comparison (0: skip).")
    out: str | None = Field(None, description="Output folder (default: runs/bench-methods, runs/bench-speed).")

    @field_validator("methods", "ablation", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return _comma_list(v)


class PrepareConfig(Section):
    """`tuneforge data prepare DOCS`: documents and code into training sets with a data card (docs/rag.md).

    The chunks are cut by rag.chunking, rag.chunk_size and rag.chunk_overlap, the same keys (and so the same
    chunks) as the retrieval index. `--out` and `--name` are short for prepare.out and prepare.name.
    """

    out: str | None = Field(None, description="Output folder (required); its dataset_info.json gets the entries.")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-]+$", description="Dataset name prefix (required): <name>_chunks, <name>_qa."
    )
    recipes: list[str] = Field(
        ["chunks", "qa", "keywords", "code"],
        description="Recipes run: chunks, qa, keywords, code (also 'qa,code'); code_review mines git repositories.",
    )
    max_new_tokens: int = Field(128, gt=0, description="Length of model-written pairs (with --model or --run).")
    overwrite: bool = Field(False, description="Replace this name's files in prepare.out.")
    # the code_review recipe (docs/recipes/code_review.md)
    input_style: InputStyle = Field(
        "instruction",
        description="code_review: each task's instruction before the input, or the raw input alone (also the "
        "code-review eval tasks' default input_style).",
    )
    comment_source: Literal["review", "message", "both"] = Field(
        "both",
        description="code_review: comments from review follow-up commits, from each commit's own subject, or both.",
    )
    holdout: float = Field(
        0.1, ge=0, lt=1, description="code_review: share of the newest commits written to <name>_<task>_test.jsonl."
    )
    negative_ratio: float = Field(
        1.0, ge=0, description="code_review: necessity hunks labelled no kept per hunk labelled yes (0: all)."
    )
    max_hunk_lines: int = Field(40, gt=0, description="code_review: longer hunks (lines of the diff body) are skipped.")

    @field_validator("recipes", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return _comma_list(v)


LAB_PRESETS: dict[str, Any] = {
    "method.r": 16,
    "method.alpha": 32,
    "train.epochs": 8.0,
    "train.lr": 1e-3,
    "train.lr_scheduler": "constant_with_warmup",
    "train.warmup_ratio": 0.05,
    "train.logging_steps": 5,
    "train.seed": 0,
    "eval.seed": 0,
    "data.cutoff_len": 128,
    "rag.top_k": 3,
}
BENCH_METHODS_PRESETS: dict[str, Any] = {
    "train.max_steps": 30,
    "train.lr": 1e-3,
    "train.lr_scheduler": "constant",
    "data.cutoff_len": 128,
    "eval.limit": 40,
}
BENCH_SPEED_PRESETS: dict[str, Any] = {"train.max_steps": 12, "data.cutoff_len": 512, "data.val_size": 16}


def _to(*keys: str) -> Callable[[Any], list[str]]:
    return lambda v: [f"{k}={json.dumps(v)}" for k in keys]


# The flags these verbs had before their settings became config keys, kept one release: argparse dest -> the
# overrides it stands for now (each use prints them). --out/--name of data prepare and --model/--run of its
# generation stay ordinary flags.
OLD_FLAGS: dict[str, dict[str, Callable[[Any], list[str]]]] = {
    "lab": {
        "out": _to("lab.out"),
        "model": _to("model.path"),
        "entities": _to("lab.entities"),
        "paraphrases": _to("lab.paraphrases"),
        "seed": _to("train.seed", "eval.seed"),
        "docs": _to("lab.docs"),
        "questions": _to("lab.questions"),
        "paraphrased": _to("lab.paraphrased"),
        "retriever": _to("rag.retriever"),
        "top_k": _to("rag.top_k"),
        "epochs": _to("train.epochs"),
        "lr": _to("train.lr"),
        "rank": lambda r: [f"method.r={r}", f"method.alpha={2 * r}"],  # the lab's LoRA had alpha = 2 * rank
        "batch_size": _to("train.batch_size"),
        "cutoff_len": _to("data.cutoff_len"),
        "max_steps": _to("train.max_steps"),
        "threads": _to("train.threads"),
        "bootstrap": _to("eval.bootstrap"),
    },
    "bench": {
        "methods": _to("bench.methods"),
        "model": _to("model.path"),
        "steps": _to("train.max_steps"),
        "batch_size": _to("train.batch_size"),
        "cutoff_len": _to("data.cutoff_len"),
        "repeats": _to("bench.repeats"),
        "ablation": _to("bench.ablation"),
        "eval_items": _to("bench.eval_items"),
        "lr": _to("train.lr"),
        "score_items": _to("eval.limit"),
        "threads": _to("train.threads"),
        "out": _to("bench.out"),
    },
    "prepare": {
        "recipes": _to("prepare.recipes"),
        "chunking": _to("rag.chunking"),
        "chunk_size": _to("rag.chunk_size"),
        "chunk_overlap": _to("rag.chunk_overlap"),
        "max_new_tokens": _to("prepare.max_new_tokens"),
        "overwrite": _to("prepare.overwrite"),
    },
}


def old_flag_overrides(verb: str, values: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The overrides of the old flags given (unset: None or False), and one note per flag naming its keys."""
    overrides: list[str] = []
    notes: list[str] = []
    for dest, to in OLD_FLAGS[verb].items():
        value = values.get(dest)
        if value is None or value is False:
            continue
        keys = to(value)
        overrides += keys
        notes.append(f"--{dest.replace('_', '-')} is now {' '.join(keys)}")
    return overrides, notes


def is_set(cfg: BaseModel, key: str) -> bool:
    """Whether the config file or an override gave `key` (a.b.c) a value, rather than leaving the default."""
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = getattr(node, part)
    return leaf in node.model_fields_set


def preset_overrides(cfg: BaseModel, presets: Mapping[str, Any]) -> list[str]:
    """The presets, as `key=value` overrides, for the keys `cfg` leaves at their default.

    A preset of a key the section does not have (method.r when method.name is ia3) is skipped.
    """
    out = []
    for key, value in presets.items():
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = getattr(node, part)
        if leaf in type(node).model_fields and leaf not in node.model_fields_set:
            out.append(f"{key}={json.dumps(value)}")
    return out


def refuse_set(cfg: BaseModel, keys: Mapping[str, str], verb: str) -> None:
    """Keys a workflow sets itself (key -> why): a value given for one would be silently unused, so refuse it."""
    for key, why in keys.items():
        if is_set(cfg, key):
            raise ConfigError(f"{verb} sets {key} itself ({why}); remove {key} from the config and overrides")


__all__ = [
    "BENCH_METHODS_PRESETS",
    "BENCH_SPEED_PRESETS",
    "LAB_PRESETS",
    "OLD_FLAGS",
    "BenchConfig",
    "LabConfig",
    "PrepareConfig",
    "is_set",
    "old_flag_overrides",
    "preset_overrides",
    "refuse_set",
]
