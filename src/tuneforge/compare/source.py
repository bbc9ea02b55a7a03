"""Where a comparison's task comes from (`compare.source`): the held-out items, the few-shot pool, the documents
of the RAG arms and the training sets of the trained arms. SOURCES has one row per source.

- `task`: the user's own task. data.datasets is the training split (the few-shot pool and what trained arms
  train on, as `tuneforge train` would), eval.tasks holds the one held-out task, rag.documents the documents.
- `knowledge`: the knowledge lab's facts (tuneforge.rag.lab): the seeded fictional world, or lab.docs and
  lab.questions; multiple-choice questions, the biographies as documents, and trained arms doing continued
  pre-training (stage pt) on the documents (`docs`) or on their paraphrases (`paraphrased`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig, refuse_set
from tuneforge.data.schema import Conversation
from tuneforge.errors import TuneforgeError
from tuneforge.eval.readers import EvalError
from tuneforge.eval.run import LoadedTask

# The run config of a trained arm before its method and overrides: (config, run name, runs folder) -> raw.
RunRaw = Callable[[RunConfig, str, Path], dict[str, Any]]
DATA_FOLDER = "data"  # under the compare folder: what a source writes (the knowledge world, its text files)


class CompareError(TuneforgeError, ValueError):
    """A comparison that cannot run as given: an arm, the task, the source or the output folder."""


@dataclass(frozen=True)
class Prepared:
    task: LoadedTask  # the held-out items and how they are scored
    documents: list[Path]  # what the RAG arms retrieve from
    train_sets: dict[str, RunRaw]  # name -> how a trained arm's run is built; the first is the default
    pool: Callable[[], list[Conversation]]  # the few-shot pool (read when a few-shot arm asks)
    pool_from: str  # the key(s) the pool comes from, for error messages
    about: str  # one line for the report
    chance: float | None = None
    gold_chunks: dict[str, list[str]] = field(default_factory=dict)  # item id -> gold chunk ids (retrieval metrics)
    held_out_path: Path | None = None  # the user's task file, which the training data must not hold


# --- task: the user's data and eval task ----------------------------------------------------------------------


def _task_run(cfg: RunConfig, name: str, runs: Path) -> dict[str, Any]:
    raw = cfg.model_dump(mode="json", exclude_unset=True)  # unset keys stay unset: each method its own defaults
    for own in ("compare", "sweep", "lab"):
        raw.pop(own, None)
    return {**raw, "name": name, "output": {**raw.get("output", {}), "dir": str(runs)}}


def held_out_task(cfg: RunConfig) -> LoadedTask:
    """eval.tasks' one task, read and sampled as `tuneforge eval` reads it."""
    from tuneforge.eval.run import load_tasks

    tasks = cfg.eval.tasks
    if len(tasks) != 1:
        raise CompareError(
            f"compare scores one held-out task, but eval.tasks has {len(tasks)}"
            + ("; keep one" if tasks else ": add the held-out task (e.g. a generation task on your test file)")
        )
    if tasks[0].fewshot:
        raise CompareError(
            f"eval.tasks[0].fewshot={tasks[0].fewshot}: the few-shot arms put the shots into the prompt themselves "
            "(compare.arms[i].k); remove fewshot from the task"
        )
    return load_tasks(cfg)[0]


def _task_source(cfg: RunConfig, out: Path) -> Prepared:
    task = held_out_task(cfg)

    def pool() -> list[Conversation]:
        from tuneforge.data.pool import train_conversations
        from tuneforge.models.loader import load_tokenizer

        return train_conversations(cfg.data, load_tokenizer(cfg.model))  # the model's: what cutoff_len skips

    return Prepared(
        task=task,
        documents=[Path(d) for d in cfg.rag.documents],
        train_sets={"train": _task_run},
        pool=functools.cache(pool),  # read once, when an arm asks
        pool_from="data.datasets",
        about=f"held-out task {task.name} ({task.task.spec.type}, {len(task.items)} items), training split from "
        f"data.datasets",
        held_out_path=Path(cfg.eval.tasks[0].path),
    )


# --- knowledge: the lab's facts -----------------------------------------------------------------------------

KNOWLEDGE_OWN_KEYS = {
    "data.datasets": "the knowledge arms train on the lab's documents (lab.docs or the fictional world)",
    "rag.documents": "the knowledge arms retrieve from the lab's documents (lab.docs or the fictional world)",
    "eval.tasks": "the knowledge arms are scored on the lab's questions (lab.questions or the fictional world)",
}


def _knowledge_source(cfg: RunConfig, out: Path) -> Prepared:
    from tuneforge.rag.lab import lab_data, pt_run_config, question_examples, question_task, train_text

    refuse_set(cfg, KNOWLEDGE_OWN_KEYS, "compare.source=knowledge")
    folder = out / DATA_FOLDER
    data = lab_data(cfg, folder)
    task = question_task("closed_book", question_examples(data.questions, None), str(folder / "questions.jsonl"))
    sets = {"docs": data.docs} | ({"paraphrased": data.paraphrased} if data.paraphrased else {})

    def trained_on(docs: Path, set_name: str) -> RunRaw:
        def raw(c: RunConfig, name: str, runs: Path) -> dict[str, Any]:
            return pt_run_config(c, name, train_text(docs, folder / f"{set_name}.jsonl"), runs)

        return raw

    def no_pool() -> list[Conversation]:
        raise CompareError(
            "compare.source=knowledge has documents, not solved question/answer pairs: few-shot arms need "
            "compare.source=task with a training split (data.datasets)"
        )

    chance = sum(1 / len(q["choices"]) for q in data.questions) / len(data.questions)
    return Prepared(
        task=task,
        documents=[data.docs],
        train_sets={name: trained_on(docs, name) for name, docs in sets.items()},
        pool=no_pool,
        pool_from="compare.source=knowledge",
        about=f"knowledge lab: {data.source}; {len(data.questions)} multiple-choice questions",
        chance=round(chance, 4),
        gold_chunks={q["id"]: list(q["gold_chunks"]) for q in data.questions if q.get("gold_chunks")},
    )


SOURCES: dict[str, Callable[[RunConfig, Path], Prepared]] = {"task": _task_source, "knowledge": _knowledge_source}


def prepare_source(cfg: RunConfig, out: Path) -> Prepared:
    """The source's task, documents, pool and training sets (the knowledge source writes its files into out)."""
    try:
        return SOURCES[cfg.compare.source](cfg, out)
    except EvalError as e:
        raise CompareError(f"the held-out task: {e}") from None


__all__ = [
    "DATA_FOLDER",
    "SOURCES",
    "CompareError",
    "Prepared",
    "held_out_task",
    "prepare_source",
]
