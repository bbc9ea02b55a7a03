"""Prompts-only data for reinforcement fine-tuning (stage grpo): any chat dataset, minus its answer.

Each sample becomes a row of TRL's prompt datasets: `prompt` (the conversation up to its last assistant turn, as
chat messages, so TRL renders it through the tokenizer's own template) and the columns the rewards read:
`answer` (the reference: the record's `answer` column, else the answer the format holds, e.g. alpaca's output),
`tools` (the tool schemas, JSON text), `source` ("file:row N", named in every reward error) and any other
record column a reward names. A sample that offers tools gets its prompt as text, rendered by
`data.render.render_prompt` with the tools in it (TRL would render one tool list for the whole batch).
Reading, mixing and splitting are build.py's pipeline (`require_datasets`, `read_samples`, `mix`, `split`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from tuneforge.config import DataConfig, DatasetSpec
from tuneforge.data.build import read_samples, require_datasets, substitute
from tuneforge.data.canaries import refuse_canaries
from tuneforge.data.formats import format_record
from tuneforge.data.mixing import mix, split
from tuneforge.data.registry import ResolvedDataset, resolve
from tuneforge.data.render import render_prompt
from tuneforge.data.schema import Conversation, DataError, Message
from tuneforge.data.scrub import scrubber_for

REFERENCE = "answer"  # the column exact_answer reads unless told otherwise
BUILT = ("prompt", "answer", "tools", "source")  # columns every row has


@dataclass(frozen=True)
class PromptData:
    train: Dataset
    stats: dict[str, Any] = field(default_factory=dict)


def build_prompts(cfg: DataConfig, tokenizer: Any, columns: Sequence[str] = ()) -> PromptData:
    """Prompt rows for TRL's GRPO/RLOO trainers, mixed like SFT data; `columns` are the ones the rewards read
    (each must be in every record, except `answer`, which falls back to the format's answer)."""
    refuse_canaries(cfg, "prompt data (stage grpo)")
    specs = require_datasets(cfg)
    loaded: list[list[dict[str, Any]]] = []
    stats: dict[str, Any] = {"datasets": {}}
    for i, spec in enumerate(specs):
        resolved, rows = _read(spec, cfg, tokenizer, columns)
        loaded.append(rows)
        stats["datasets"][f"{resolved.name}#{i}"] = {"format": resolved.format, "read": len(rows)}
    _, pool = mix([range(len(rows)) for rows in loaded], [s.ratio for s in specs], cfg)
    train_keys, _ = split(pool, cfg.val_size)
    rows = [loaded[i][j] for i, j in train_keys]
    if "answer" in columns and all(r["answer"] is None for r in rows):
        raise DataError("no sample has a reference answer (an `answer` column, or the answer of its format)")
    text_prompts = any(r["tools"] for r in rows)
    if text_prompts:  # one dataset holds one kind of prompt: TRL asks the first row which kind it is
        rows = [{**r, "prompt": _as_text(tokenizer, r["prompt"], r["tools"])} for r in rows]
    stats.update(train=len(rows), with_tools=sum(1 for r in rows if r["tools"]), text_prompts=text_prompts)
    return PromptData(Dataset.from_list(rows), stats)


def _read(
    spec: DatasetSpec, cfg: DataConfig, tokenizer: Any, columns: Sequence[str]
) -> tuple[ResolvedDataset, list[dict[str, Any]]]:
    resolved = resolve(spec, cfg.dataset_dir)
    what = f"dataset {resolved.name!r}"
    if resolved.ranking or resolved.kto or resolved.format in ("preference", "text"):
        raise DataError(f"{what} is {resolved.format} data; stage grpo needs chat prompts (alpaca, sharegpt, openai)")
    fmt, fspec = resolved.format, resolved.format_spec

    def to_row(source: str, record: Mapping[str, Any]) -> dict[str, Any]:
        sample = substitute(format_record(fmt, _with_response(fmt, record, fspec), fspec, source), cfg.variables)
        assert isinstance(sample, Conversation)  # chat formats make conversations
        return prompt_row(sample, record, columns, tokenizer)

    return resolved, read_samples(resolved, to_row, spec.max_samples, scrubber_for(cfg))


def _with_response(fmt: str, record: Mapping[str, Any], fspec: Any) -> Mapping[str, Any]:
    """A prompts-only record with an empty answer added, so that the chat format (which refuses a sample with
    nothing to train on) reads it: alpaca's response column, or a last assistant turn of sharegpt/openai."""
    c, t = fspec.columns, fspec.tags
    if fmt == "alpaca":
        column = c.get("response")
        return {**record, column: ""} if column and column not in record else record
    turns = record.get(c.get("messages") or "")
    role, content, assistant = t.get("role_tag"), t.get("content_tag"), t.get("assistant_tag")
    if isinstance(turns, list) and turns and role and content and assistant:
        last = turns[-1]
        if isinstance(last, Mapping) and last.get(role) != assistant:
            return {**record, c["messages"]: [*turns, {role: assistant, content: ""}]}
    return record


def prompt_row(
    sample: Conversation, record: Mapping[str, Any], columns: Sequence[str], tokenizer: Any
) -> dict[str, Any]:
    """One sample as a prompt row (see the module docstring); the answer the format holds is the reference
    when the record has no `answer` column."""
    messages = list(sample.messages)
    last_answer = None
    while messages and messages[-1].role == "assistant":
        last_answer = last_answer if last_answer is not None else messages[-1].content
        messages.pop()
    if not messages or messages[-1].role not in ("user", "tool"):
        raise DataError(f"{sample.source}: no prompt left once the answer is taken away (it needs a user turn)")
    row: dict[str, Any] = {
        "prompt": [{"role": m.role, "content": m.content} for m in messages],
        "answer": _text(record.get(REFERENCE, last_answer or None)),
        "tools": sample.tools,
        "source": sample.source,
    }
    for column in columns:
        if column in BUILT:
            continue
        if column not in record:
            have = ", ".join(sorted(record))
            raise DataError(f"{sample.source}: no column {column!r}, which a reward reads (this record has: {have})")
        row[column] = _text(record[column])
    return row


def _as_text(tokenizer: Any, messages: list[dict[str, str]], tools: str | None) -> str:
    ids = render_prompt(tokenizer, [Message(m["role"], m["content"]) for m in messages], tools)  # type: ignore[arg-type]  # roles came from Messages
    return str(tokenizer.decode(ids, skip_special_tokens=False))


def _text(value: Any) -> str | None:
    """Columns arrive at rewards as text (Arrow needs one type per column): numbers and lists as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


__all__ = ["PromptData", "build_prompts", "prompt_row"]
