"""The `codereviewer` reader: CodeReviewer's JSONL layouts (Li et al. 2022), and the held-out files of the
`code_review` recipe, which write the same field names.

  necessity and comment items  `patch` (a diff hunk: the @@ header, then lines marked " ", "-", "+"),
                               `y` (1: the hunk drew a review comment, 0: none), `msg` (the comment; "" when y=0)
  refinement items             `old` (the code before), `new` (the code after), `comment` (the review comment)

CodeReviewer publishes its refinement set with a one-character marker before each line of `old` and `new`; that
layout is not read here (the markers would be taken for code). Each item keeps its fields in `Example.meta`,
with `source` ("file:line") for the task types' errors; the task type says which fields it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.eval.example import EvalError, Example, records

PATCH_FIELDS = ("patch", "y", "msg")
REFINEMENT_FIELDS = ("old", "new", "comment")


def _text(record: dict[str, Any], key: str, source: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise EvalError(f"{source}: field {key!r} must be text, got {type(value).__name__}: {value!r:.80}")
    return value


def _label(value: Any, source: str) -> int:
    if isinstance(value, bool) or value not in (0, 1):
        raise EvalError(f"{source}: field 'y' is {value!r}; it must be 1 (the hunk drew a review comment) or 0")
    return int(value)


def read_codereviewer(path: Path, split: str) -> list[Example]:
    out = []
    for i, (source, record) in enumerate(records(path)):
        meta: dict[str, Any] = {"source": source}
        if "patch" in record:
            meta["patch"] = _text(record, "patch", source)
            if not meta["patch"].strip():
                raise EvalError(f"{source}: field 'patch' is empty")
            if record.get("y") is not None:
                meta["y"] = _label(record["y"], source)
            if record.get("msg") is not None:
                meta["msg"] = _text(record, "msg", source)
        elif any(k in record for k in REFINEMENT_FIELDS):
            missing = [k for k in REFINEMENT_FIELDS if record.get(k) is None]
            if missing:
                raise EvalError(f"{source}: a refinement item needs {', '.join(map(repr, missing))} too")
            meta.update({k: _text(record, k, source) for k in REFINEMENT_FIELDS})
        else:
            have = ", ".join(map(repr, record)) or "none"
            raise EvalError(
                f"{source}: neither 'patch' (a necessity or comment item) nor 'old', 'new' and 'comment' (a "
                f"refinement item); this record has fields: {have}"
            )
        question = meta.get("patch", meta.get("old", ""))
        target = str(meta.get("msg", meta.get("new", meta.get("y", ""))))
        out.append(Example(str(i), question, target, meta=meta))
    if not out:
        raise EvalError(f"{path} holds no items")
    return out


__all__ = ["PATCH_FIELDS", "REFINEMENT_FIELDS", "read_codereviewer"]
