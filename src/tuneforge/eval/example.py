"""The item every evaluation reader produces (`Example`), the error they raise, and the record helpers they
share (eval/readers.py: the benchmark layouts; eval/trust_readers.py: the trust sets)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.sources import read_records
from tuneforge.errors import TuneforgeError


class EvalError(TuneforgeError, ValueError):
    """An evaluation that cannot run; the message names the setting or file at fault."""


@dataclass(frozen=True)
class Example:
    """One evaluation item in the shape every task type reads.

    `target` is the gold answer as text (label, number, reference, letter); `gold` the index of the right
    choice for multiple choice; `calls` the expected tool calls ([] = no call is right).
    """

    id: str
    question: str
    target: str = ""
    choices: tuple[str, ...] = ()
    gold: int | None = None
    instruction: str | None = None
    reference: str | None = None  # a worked answer, shown in few-shot examples
    messages: tuple[dict[str, str], ...] = ()
    tools: str | None = None
    calls: tuple[dict[str, Any], ...] | None = None
    subject: str | None = None
    prompt: str | None = None  # the item's whole prompt as published (LLM-Adapters' instruction, choices listed)
    choice_label: str | None = None  # the word the published prompt numbers choices with: solution1, option2 ...
    meta: dict[str, Any] = field(default_factory=dict, hash=False)  # what a task type needs beyond the above


Reader = Callable[[Path, str], list[Example]]
LETTERS = "ABCDEFGHIJ"


def records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    return read_records(path)


def json_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """BFCL's .json files are JSON lines, also when they hold a single line (which parses as one object)."""
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise EvalError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(record, dict):
                    raise EvalError(f"{path}:{n}: expected one JSON object per line, got {type(record).__name__}")
                yield f"{path}:{n}", record


def field_of(record: dict[str, Any], key: str, source: str) -> Any:
    if key not in record:
        raise EvalError(f"{source}: missing field {key!r} (fields: {', '.join(map(str, record))})")
    return record[key]
