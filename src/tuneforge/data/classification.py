"""Labelled text (SST-2, AG News, any file of text and label): one owner for training (the `classification`
FORMATS row) and evaluation (tuneforge.eval's `classification` task), so both build the same prompt and the
same answer.

A record holds a text and a label:

    SST-2 (.tsv with a header):     {"sentence": "it 's a charming and often affecting journey . ", "label": "1"}
    AG News (.tsv without header):  {"text": "Toshiba Corp. announced ...", "label": "Sci/Tech"}

The user turn is the instruction (the dataset's `instruction`, else "Answer with one of: negative / positive."
for its `labels`), a blank line, then the text; the assistant turn is the label word. Integer labels index
`labels` (SST-2's 0/1); text labels must be one of `labels`, ignoring case and surrounding punctuation, and
are written as `labels` spells them; without `labels`, text labels are used as they are and integer labels are
an error asking for `labels` (as eval's task does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tuneforge.data.schema import Conversation, DataError, Message

if TYPE_CHECKING:
    from tuneforge.data.formats import FormatSpec

# `text` also reads `sentence` when a record has no `text` column: SST-2's header names it so (data_column).
COLUMNS: dict[str, str | None] = {"text": "text", "label": "label"}
TEXT_FALLBACK = "sentence"


def default_instruction(labels: Sequence[str]) -> str:
    """The instruction when none is given, for training and eval alike: 'Answer with one of: a / b.'."""
    return f"Answer with one of: {' / '.join(labels)}."


def user_turn(text: str, instruction: str | None) -> str:
    """The instruction, a blank line, then the text (eval's prompts.user_text joins them the same way)."""
    return "\n\n".join(p for p in (instruction, text) if p)


def clean_label(text: str) -> str:
    """A label as compared: case, spaces, and punctuation or quotes around it aside ('Positive.' -> 'positive')."""
    return text.strip().strip(".!?\"'").strip().lower()


def label_index(value: str | int, labels: Sequence[str]) -> int | None:
    """The index in `labels` that a label names, or None: an integer (or digits, unless the labels are digits
    themselves) is an index, text matches a label by clean_label."""
    target = str(value).strip()  # a JSON integer reads as eval reads the same label in a TSV: as its digits
    if target.isdigit() and not any(label.isdigit() for label in labels):
        k = int(target)
        return k if k < len(labels) else None
    return next((i for i, label in enumerate(labels) if clean_label(label) == clean_label(target)), None)


def check_settings(labels: Sequence[str], instruction: str | None) -> None:
    """The dataset's `labels` and `instruction`, checked once before any record is read."""
    empty = [i for i, label in enumerate(labels) if not clean_label(label)]
    if empty:
        raise DataError(f"labels[{empty[0]}] is empty; `labels` lists the label words, e.g. [negative, positive]")
    cleaned = [clean_label(label) for label in labels]
    twice = [(cleaned.index(c), i) for i, c in enumerate(cleaned) if cleaned.index(c) < i]
    if twice:
        (a, b), shown = twice[0], list(labels)
        raise DataError(f"labels[{a}] and labels[{b}] ({labels[a]!r}, {labels[b]!r}) name one label twice: {shown}")
    if not labels and not instruction:
        raise DataError(
            "format classification needs `labels` (the default instruction lists them: "
            f"{default_instruction(['negative', 'positive'])!r}) or an `instruction`; e.g. labels: [negative, positive]"
        )


def label_word(value: Any, labels: Sequence[str], column: str) -> str:
    """The assistant's answer for a record's label; a DataError naming the column and the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"column {column!r}: a label is text or an integer, got {type(value).__name__}: {value!r:.80}")
    if labels:
        k = label_index(value, labels)
        if k is None:
            raise DataError(f"column {column!r}: label {value!r} is not one of labels {list(labels)} (or an index)")
        return labels[k]
    word = str(value).strip()
    if isinstance(value, int) or word.isdigit():
        raise DataError(
            f"column {column!r}: label {value!r} is a number; name the labels in order with `labels`, "
            "e.g. labels: [negative, positive]"
        )
    if not word:
        raise DataError(f"column {column!r} is empty: every record needs its label")
    return word


def data_column(record: dict[str, Any], column: str | None, fld: str) -> str:
    """The column holding `fld` in this record: the named one, or for `text` SST-2's `sentence` when the record
    has no `text`; a DataError when the column is switched off or missing."""
    if column is None:
        raise DataError(f"the {fld!r} field has no column (columns.{fld} is null)")
    if fld == "text" and column not in record and TEXT_FALLBACK in record:
        column = TEXT_FALLBACK
    if column not in record or record[column] is None:
        have = ", ".join(map(repr, record)) or "none"
        raise DataError(f"missing column {column!r} (the {fld!r} field); this record has columns: {have}")
    return column


def fields(
    record: dict[str, Any], labels: Sequence[str], instruction: str | None, columns: dict[str, str | None]
) -> tuple[str, str]:
    """(user turn, label word) of one record; a DataError names the column at fault (the caller adds the source)."""
    c = {**COLUMNS, **columns}
    text_column = data_column(record, c["text"], "text")
    text = record[text_column]
    if not isinstance(text, str):
        raise DataError(f"column {text_column!r} must be text, got {type(text).__name__}: {text!r:.80}")
    if not text.strip():
        raise DataError(f"column {text_column!r} is empty: it holds the text to classify")
    label_column = data_column(record, c["label"], "label")
    word = label_word(record[label_column], labels, label_column)
    return user_turn(text.strip(), instruction or default_instruction(labels)), word


def classification(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    """The FORMATS row: the user turn, then the label word as the assistant turn."""
    user, word = fields(record, spec.labels, spec.instruction, dict(spec.columns))
    messages = (Message("user", user), Message("assistant", word))
    return Conversation(((Message("system", spec.system),) if spec.system else ()) + messages)


__all__ = [
    "COLUMNS",
    "check_settings",
    "classification",
    "clean_label",
    "default_instruction",
    "fields",
    "label_index",
    "label_word",
    "user_turn",
]
