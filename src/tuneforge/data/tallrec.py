"""TALLRec's recommendation layout (Bao et al. 2023): one owner for training (the `tallrec` FORMATS row) and
evaluation (tuneforge.eval's `tallrec` reader), so both see the same prompt and the same answer.

A record is alpaca-like JSON, as in TALLRec's `data/book` and `data/movie`:

    {"instruction": "Given the user's preference and unpreference, identify whether the user will like the
                     target book by answering \"Yes.\" or \"No.\".",
     "input": "User Preference: ...\\nUser Unpreference: ...\\nWhether the user will like the target book ...?",
     "output": "Yes."}

The user turn is the instruction, a newline and the input (as the alpaca format joins them); the label must be
Yes or No (case, spaces and a final full stop aside) and the assistant turn is TALLRec's canonical "Yes." / "No.".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.data.schema import Conversation, DataError, Message

if TYPE_CHECKING:
    from tuneforge.data.formats import FormatSpec

LABELS: tuple[str, str] = ("No", "Yes")  # index 1 is the positive class: AUC ranks by P(Yes)
COLUMNS: dict[str, str | None] = {"prompt": "instruction", "query": "input", "response": "output"}


def answer_text(label: str) -> str:
    """The assistant turn for a label, as TALLRec writes it: 'Yes.' / 'No.'."""
    return f"{label}."


def yes_no(value: Any, column: str) -> str:
    """'Yes.' / 'yes' / ' No ' -> 'Yes' / 'No'; anything else is a DataError naming the column and the value."""
    if isinstance(value, str):
        word = value.strip().rstrip(".!").strip().lower()
        for label in LABELS:
            if word == label.lower():
                return label
    raise DataError(f'column {column!r}: label {value!r} is not Yes or No (TALLRec\'s answers are "Yes." and "No.")')


def _column(record: dict[str, Any], column: str | None, fld: str) -> str:
    """The column holding `fld`; a DataError when it is switched off or the record lacks it."""
    if column is None:
        raise DataError(f"the {fld!r} field has no column (columns.{fld} is null)")
    if column not in record or record[column] is None:
        have = ", ".join(map(repr, record)) or "none"
        raise DataError(f"missing column {column!r} (the {fld!r} field); this record has columns: {have}")
    return column


def _text(record: dict[str, Any], column: str) -> str:
    value = record[column]
    if not isinstance(value, str):
        raise DataError(f"column {column!r} must be text, got {type(value).__name__}: {value!r:.80}")
    return value.strip()


def fields(record: dict[str, Any], columns: dict[str, str | None] | None = None) -> tuple[str, str]:
    """(user text, label) of one record; a DataError names the column at fault (the caller adds file and row).

    The instruction may be absent (everything in the input); the input and the label may not."""
    c = {**COLUMNS, **(columns or {})}
    prompt = c["prompt"]
    instruction = _text(record, prompt) if prompt is not None and record.get(prompt) is not None else ""
    query_column = _column(record, c["query"], "query")
    query = _text(record, query_column)
    if not query:
        raise DataError(f"column {query_column!r} is empty: it holds the user's history and the target item")
    response = _column(record, c["response"], "response")
    return "\n".join(p for p in (instruction, query) if p), yes_no(record[response], response)


def tallrec(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    """The FORMATS row: the user turn, then "Yes." or "No." as the assistant turn."""
    user, label = fields(record, dict(spec.columns))
    messages = (Message("user", user), Message("assistant", answer_text(label)))
    return Conversation(((Message("system", spec.system),) if spec.system else ()) + messages)


__all__ = ["COLUMNS", "LABELS", "answer_text", "fields", "tallrec", "yes_no"]
