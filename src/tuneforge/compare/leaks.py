"""The held-out items must not be in what the arms learn from: the training files and the training split.

A comparison scores every arm on the same held-out items; an arm whose few-shot pool or training data holds them
is scored on what it was shown. `refuse_leaks` refuses, before anything runs, a training file that is the
held-out task's file, and training-split questions equal to held-out questions (case folded, words only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tuneforge.compare.context import query_of, shot
from tuneforge.compare.source import CompareError, Prepared
from tuneforge.config import DataConfig

WORD = re.compile(r"\w+")


def normalised(text: str) -> str:
    """A question as the leak check compares it: case folded, words only (punctuation and spacing dropped)."""
    return " ".join(WORD.findall(text.casefold()))


def refuse_leaks(source: Prepared, datas: Sequence[tuple[str, DataConfig]], check_questions: bool) -> None:
    """Refuse a held-out task that the training data holds: a training file that is the task's file (each data
    section of `datas`, (where, data): the config's and every trained arm's run), or, with `check_questions`,
    training-split questions equal to held-out questions (the config's training split: the few-shot pool, what a
    trained arm trains on unless its overrides change data.*)."""
    from tuneforge.data.registry import resolve

    held = source.held_out_path
    if held is None:  # the knowledge source writes its own documents and questions
        return
    task_file = held.resolve()
    for where, data in datas:
        for i, spec in enumerate(data.datasets):
            for file in resolve(spec, data.dataset_dir).files:
                f = Path(file).resolve()
                if f == task_file or (task_file.is_dir() and f.is_relative_to(task_file)):
                    raise CompareError(
                        f"{where}data.datasets[{i}] reads {file}, which is the held-out task's eval.tasks[0].path "
                        f"{held}: "
                        "the arms would be trained or prompted on the items they are scored on; hold the test items "
                        "out of the training data"
                    )
    if not check_questions:
        return
    train = {normalised(shot(c)["question"]): c.source for c in source.pool()}
    leaked = [(i, train[q]) for i in source.task.items if (q := normalised(query_of(i.example))) in train]
    if leaked:
        item, where = leaked[0]
        raise CompareError(
            f"{len(leaked)} of {len(source.task.items)} held-out questions of {held} are also training-split "
            f"questions of {source.pool_from} (compared case folded, punctuation and spacing dropped), e.g. item "
            f"{item.example.id} {query_of(item.example)[:80]!r} = {where}: the few-shot pool and the trained arms "
            "would hold the scored items; remove them from the training data"
        )


__all__ = ["normalised", "refuse_leaks"]
