"""The `tallrec` reader: TALLRec's yes/no recommendation JSON (tuneforge.data.tallrec owns the layout), one
split file, or a folder of them (`valid.json`, `test.json`) read by `split`."""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.schema import DataError
from tuneforge.data.tallrec import LABELS, answer_text, fields
from tuneforge.eval.example import EvalError, Example, records


def read_tallrec(path: Path, split: str) -> list[Example]:
    """One Example per record: the user turn training renders (instruction, newline, input) as the question,
    the label (Yes/No) as target, `gold` its index in LABELS and the canonical answer ("Yes.") as reference.

    The user turn goes in `question` with no separate instruction, so the eval prompt is the training prompt."""
    out = []
    for i, (source, record) in enumerate(records(path)):
        try:
            user, label = fields(record)
        except DataError as e:
            raise EvalError(f"{source}: {e}") from None
        out.append(
            Example(
                str(i),
                user,
                label,
                choices=LABELS,
                gold=LABELS.index(label),
                reference=answer_text(label),
            )
        )
    return out


__all__ = ["read_tallrec"]
