"""The FORMATS table: one function per file layout, turning a record into a Conversation or a Text.

The tool-use layouts (glaive, xlam, toolbench, lf_v1) live in tool_formats.py; every chat sample, whatever its
layout, passes `tool_formats.check_tool_use` (valid schemas, calls to offered tools, results after calls).

Column and tag names follow LLaMA-Factory's dataset_info.json (data/README.md there) so its datasets work
unchanged: a `FormatSpec` says which column holds each field and, for chat lists, which keys and values mark
roles. A column mapped to None is switched off, as in LLaMA-Factory.

Format functions raise DataError without the record's source; `format_record` adds it, so the functions
stay plain `(record, spec) -> sample` entries of the table.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.classification import COLUMNS as CLASSIFICATION_COLUMNS
from tuneforge.data.classification import check_settings, classification
from tuneforge.data.schema import Conversation, DataError, Message, Preference, Sample, Text
from tuneforge.data.tallrec import COLUMNS as TALLREC_COLUMNS
from tuneforge.data.tallrec import tallrec
from tuneforge.data.tool_formats import check_tool_use, glaive, lf_v1, toolbench, xlam
from tuneforge.data.toolcalls import calls_from_json, render_calls

# Field -> default column, per format (LLaMA-Factory's defaults; `openai` and `text` are tuneforge's).
DEFAULT_COLUMNS: dict[str, dict[str, str | None]] = {
    "alpaca": {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "history": None,
        "system": None,
        "tools": None,
        "chosen": None,  # ranking datasets (LLaMA-Factory `ranking: true`): the preferred response
        "rejected": None,
    },
    "sharegpt": {"messages": "conversations", "system": None, "tools": None, "chosen": None, "rejected": None},
    "openai": {"messages": "messages", "system": None, "tools": "tools"},
    "text": {"text": "text"},
    "preference": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
    # tool-use layouts (data/tool_formats.py)
    "glaive": {"system": "system", "chat": "chat"},
    "xlam": {"query": "query", "tools": "tools", "answers": "answers"},
    "toolbench": {},
    "lf_v1": {"messages": "messages", "tools": "tools"},
    "tallrec": dict(TALLREC_COLUMNS),  # TALLRec's yes/no recommendation records (data/tallrec.py)
    "classification": dict(CLASSIFICATION_COLUMNS),  # text + label: SST-2, AG News (data/classification.py)
}

# The dataset settings (DatasetSpec keys beyond columns/tags/system) each format reads, and the check of them;
# a setting given to a format that does not read it is an error, never silently ignored.
SETTINGS: dict[str, tuple[str, ...]] = {"classification": ("labels", "instruction")}
CHECK_SETTINGS: dict[str, Callable[[tuple[str, ...], str | None], None]] = {"classification": check_settings}

# Tag -> default key or value in the message objects, for the formats that hold a list of messages.
DEFAULT_TAGS: dict[str, dict[str, str | None]] = {
    "sharegpt": {
        "role_tag": "from",
        "content_tag": "value",
        "user_tag": "human",
        "assistant_tag": "gpt",
        "observation_tag": "observation",
        "function_tag": "function_call",
        "system_tag": "system",
    },
    "openai": {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "observation_tag": "tool",
        "function_tag": None,  # OpenAI data marks calls with `tool_calls` on an assistant message instead
        "system_tag": "system",
    },
}

# A key seen in a record -> the format it suggests; used only to hint in errors, never to guess silently.
_FORMAT_HINTS = {"conversations": "sharegpt", "messages": "openai", "instruction": "alpaca", "text": "text"}


@dataclass(frozen=True)
class FormatSpec:
    """Where a format finds its fields: columns, message tags, the dataset's default system prompt, and the
    settings of the formats that read them (SETTINGS: classification's label words and instruction)."""

    columns: Mapping[str, str | None] = field(default_factory=dict)
    tags: Mapping[str, str | None] = field(default_factory=dict)
    system: str | None = None
    labels: tuple[str, ...] = ()
    instruction: str | None = None


def make_format_spec(
    fmt: str,
    columns: Mapping[str, str | None] | None = None,
    tags: Mapping[str, str | None] | None = None,
    system: str | None = None,
    labels: Sequence[str] = (),
    instruction: str | None = None,
) -> FormatSpec:
    """The defaults of `fmt` with `columns`/`tags` laid over them; unknown names are errors (typos), and so are
    settings (`labels`, `instruction`) given to a format that does not read them."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    cols = _overlay("columns", fmt, DEFAULT_COLUMNS[fmt], columns or {})
    tag_map = _overlay("tags", fmt, DEFAULT_TAGS.get(fmt, {}), tags or {})
    given = {"labels": bool(labels), "instruction": instruction is not None}
    stray = [key for key, set_ in given.items() if set_ and key not in SETTINGS.get(fmt, ())]
    if stray:
        readers = ", ".join(f for f, keys in SETTINGS.items() if stray[0] in keys)
        raise DataError(f"`{stray[0]}` is read only by format {readers}; format {fmt!r} does not read it")
    if fmt in CHECK_SETTINGS:
        CHECK_SETTINGS[fmt](tuple(labels), instruction)
    return FormatSpec(cols, tag_map, system, tuple(labels), instruction)


def _overlay(
    kind: str, fmt: str, defaults: Mapping[str, str | None], given: Mapping[str, str | None]
) -> dict[str, str | None]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or f"none: format {fmt!r} takes no {kind}"
        raise DataError(f"{kind} {', '.join(map(repr, unknown))} not used by format {fmt!r}; allowed: {allowed}")
    return {**defaults, **given}


def format_record(fmt: str, record: Mapping[str, Any], spec: FormatSpec, source: str) -> Sample:
    """Convert one record, naming `source` in any error and recording it on the sample."""
    try:
        sample = FORMATS[fmt](dict(record), spec)
        if isinstance(sample, Conversation):
            check_tool_use(sample)
    except DataError as e:
        raise DataError(f"{source}: {e}") from None
    return dataclasses.replace(sample, source=source)


# ---- helpers -------------------------------------------------------------------------------------------


def _required(record: dict[str, Any], column: str | None, fld: str) -> Any:
    if column is None:
        raise DataError(f"the {fld!r} field has no column (columns.{fld} is null)")
    if column not in record:
        have = ", ".join(map(repr, record)) or "none"
        hint = next((f"; it looks like {f!r} data" for k, f in _FORMAT_HINTS.items() if k in record), "")
        raise DataError(f"missing column {column!r} (the {fld!r} field); this record has columns: {have}{hint}")
    return record[column]


def _optional(record: dict[str, Any], column: str | None) -> Any:
    return None if column is None else record.get(column)


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    raise DataError(f"{where} must be text, got {type(value).__name__}: {value!r:.80}")


def _tools(value: Any, column: str | None) -> str | None:
    """Tool schemas as JSON text, whether the file holds text (glaive) or nested objects (parquet, jsonl)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(f"column {column!r} is not valid JSON ({e.msg}): {value!r:.80}") from None
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    raise DataError(f"column {column!r} must hold JSON tool schemas, got {type(value).__name__}")


def _with_system(messages: list[Message], system: Any, spec: FormatSpec, where: str) -> tuple[Message, ...]:
    if system is not None and system != "":
        return (Message("system", _text(system, where)), *messages)
    if spec.system:
        return (Message("system", spec.system), *messages)
    return tuple(messages)


def _json_text(value: Any, where: str) -> str:
    # Function calls and tool results are often stored as objects; templates want their JSON text.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else _text(value, where)


# ---- formats -------------------------------------------------------------------------------------------


def alpaca(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    """instruction (+ "\\n" + input) -> user, output -> assistant; optional history pairs before them."""
    c = spec.columns
    messages: list[Message] = []
    history = _optional(record, c["history"])
    for i, pair in enumerate(history or []):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise DataError(f"column {c['history']!r} item {i} must be a [user, assistant] pair, got {pair!r:.80}")
        messages.append(Message("user", _text(pair[0], f"{c['history']}[{i}][0]")))
        messages.append(Message("assistant", _text(pair[1], f"{c['history']}[{i}][1]")))
    parts = []
    if c["prompt"] is not None:
        parts.append(_text(_required(record, c["prompt"], "prompt"), f"column {c['prompt']!r}"))
    query = _optional(record, c["query"])
    if query:
        parts.append(_text(query, f"column {c['query']!r}"))
    messages.append(Message("user", "\n".join(p for p in parts if p)))
    response = _required(record, c["response"], "response")
    messages.append(Message("assistant", _text(response, f"column {c['response']!r}")))
    system = _optional(record, c["system"])
    return Conversation(
        _with_system(messages, system, spec, f"column {c['system']!r}"),
        _tools(_optional(record, c["tools"]), c["tools"]),
    )


def sharegpt(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    """A list of {from, value} turns: human/observation at odd positions, gpt/function_call at even ones.

    A function_call value (JSON text, an object or a list of them) becomes the tool-call text of data.toolcalls.
    """
    c, t = spec.columns, spec.tags
    turns = _turns(record, c["messages"])
    role_key, content_key = str(t["role_tag"]), str(t["content_tag"])
    system: Any = _optional(record, c["system"])
    start = 0
    if turns and t["system_tag"] and _tag(turns[0], role_key, c["messages"], 0) == t["system_tag"]:
        system, start = _content(turns[0], content_key, c["messages"], 0), 1
    roles = {t["user_tag"]: "user", t["observation_tag"]: "tool", t["assistant_tag"]: "assistant"}
    roles[t["function_tag"]] = "assistant"  # a function call is the assistant speaking: it is trained on
    expected = ([t["user_tag"], t["observation_tag"]], [t["assistant_tag"], t["function_tag"]])
    messages = []
    for pos, i in enumerate(range(start, len(turns))):
        tag = _tag(turns[i], role_key, c["messages"], i)
        allowed = [x for x in expected[pos % 2] if x is not None]
        if tag not in allowed:
            raise DataError(
                f"{c['messages']}[{i}] has {role_key}={tag!r} where {' or '.join(map(repr, allowed))} is "
                "expected: turns must alternate user/observation, then assistant/function call"
            )
        if tag == t["function_tag"]:
            raw = _content(turns[i], content_key, c["messages"], i, raw=True)
            content = render_calls(calls_from_json(raw, f"{c['messages']}[{i}].{content_key}"))
        else:
            content = _content(turns[i], content_key, c["messages"], i)
        messages.append(Message(roles[tag], content))  # type: ignore[arg-type]
    if not messages or len(messages) % 2:
        raise DataError(
            f"{c['messages']} must end with an assistant ({t['assistant_tag']!r}) turn; "
            f"it has {len(messages)} non-system turns"
        )
    return Conversation(
        _with_system(messages, system, spec, "system"), _tools(_optional(record, c["tools"]), c["tools"])
    )


def openai(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    """OpenAI chat messages: {role, content}, content as text or text parts; assistant `tool_calls` too.

    An assistant's `tool_calls` follow its content as the tool-call text of data.toolcalls (one format from
    training to serving); the calls' ids are not part of what the model says.
    """
    c, t = spec.columns, spec.tags
    turns = _turns(record, c["messages"])
    role_key, content_key = str(t["role_tag"]), str(t["content_tag"])
    roles: dict[str | None, str] = {t[f"{r}_tag"]: r for r in ("system", "user", "assistant")}
    roles[t["observation_tag"]] = "tool"
    roles[t["function_tag"]] = "assistant"
    roles.pop(None, None)
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        tag = _tag(turn, role_key, c["messages"], i)
        if tag not in roles:
            raise DataError(
                f"{c['messages']}[{i}] has unknown {role_key} {tag!r}; allowed: {', '.join(map(str, roles))}"
            )
        role = roles[tag]
        calls = turn.get("tool_calls")
        if role == "assistant" and calls:
            if not (isinstance(calls, list) and all(isinstance(call, dict) for call in calls)):
                raise DataError(f"{c['messages']}[{i}].tool_calls must be a list of objects, got {calls!r:.80}")
            said = turn.get(content_key)
            text = "" if said is None else _parts(said, f"{c['messages']}[{i}]")
            content = render_calls(calls_from_json(calls, f"{c['messages']}[{i}].tool_calls"), text)
        else:
            content = _parts(_content(turn, content_key, c["messages"], i, raw=True), f"{c['messages']}[{i}]")
        messages.append(Message(role, content))  # type: ignore[arg-type]
    spoken = [m.role for m in messages if m.role != "system"]
    if "assistant" not in spoken:
        raise DataError(f"{c['messages']} has no assistant message, so there is nothing to train on")
    if spoken[0] == "assistant":
        raise DataError(f"{c['messages']} starts with an assistant message; a user message must come first")
    tools = _tools(_optional(record, c["tools"]), c["tools"])
    if messages[0].role == "system":
        return Conversation(tuple(messages), tools)
    return Conversation(_with_system(messages, _optional(record, c["system"]), spec, "system"), tools)


def text(record: dict[str, Any], spec: FormatSpec) -> Text:
    column = spec.columns["text"]
    return Text(_text(_required(record, column, "text"), f"column {column!r}"))


def _turns(record: dict[str, Any], column: str | None) -> list[Any]:
    turns = _required(record, column, "messages")
    if not isinstance(turns, list):
        raise DataError(f"column {column!r} must be a list of messages, got {type(turns).__name__}")
    return turns


def _tag(turn: Any, key: str, column: str | None, i: int) -> Any:
    if not isinstance(turn, dict):
        raise DataError(f"{column}[{i}] must be an object, got {turn!r:.80}")
    if key not in turn:
        raise DataError(f"{column}[{i}] has no {key!r} key; it has: {', '.join(map(repr, turn))}")
    return turn[key]


def _content(turn: dict[str, Any], key: str, column: str | None, i: int, raw: bool = False) -> Any:
    if key not in turn:
        raise DataError(f"{column}[{i}] has no {key!r} key; it has: {', '.join(map(repr, turn))}")
    return turn[key] if raw else _json_text(turn[key], f"{column}[{i}].{key}")


def _parts(content: Any, where: str) -> str:
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise DataError(f"{where}: only {{'type': 'text', 'text': ...}} parts are supported, got {part!r:.70}")
            texts.append(part["text"])
        return "\n".join(texts)
    return _json_text(content, f"{where}.content")


def preference(record: dict[str, Any], spec: FormatSpec) -> Preference:
    """TRL's layout: chosen/rejected as text or message lists, prompt optional (else the common prefix)."""
    c = spec.columns
    chosen = _messages(record, c["chosen"], "chosen")
    rejected = _messages(record, c["rejected"], "rejected")
    prompt_col = c.get("prompt")
    if prompt_col is not None and record.get(prompt_col) is not None:
        prompt = _messages(record, prompt_col, "prompt", role="user")
    else:
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    if not prompt or prompt[-1].role != "user":
        raise DataError("the prompt must end with a user message")
    for name, answer in (("chosen", chosen), ("rejected", rejected)):
        if len(answer) != 1 or answer[0].role != "assistant":
            raise DataError(f"{name!r} must add exactly one assistant message after the prompt")
    if spec.system and prompt[0].role != "system":
        prompt = [Message("system", spec.system), *prompt]
    return Preference(tuple(prompt), chosen[0].content, rejected[0].content)


def _messages(record: dict[str, Any], column: str | None, fld: str, role: str = "assistant") -> list[Message]:
    if column is None or column not in record:
        raise DataError(f"missing column {column!r} (the {fld!r} field); this record has: {', '.join(record)}")
    value = record[column]
    if isinstance(value, str):
        return [Message(role, value)]  # type: ignore[arg-type]
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise DataError(f"column {column!r} must be text or a list of {{role, content}} messages, got {value!r:.60}")
    try:
        return [Message(m["role"], m["content"]) for m in value]
    except KeyError as e:
        raise DataError(f"column {column!r}: a message has no {e} key") from None


FORMATS: dict[str, Callable[[dict[str, Any], FormatSpec], Sample]] = {
    "alpaca": alpaca,
    "sharegpt": sharegpt,
    "openai": openai,
    "text": text,
    "preference": preference,
    "glaive": glaive,
    "xlam": xlam,
    "toolbench": toolbench,
    "lf_v1": lf_v1,
    "tallrec": tallrec,
    "classification": classification,
}

__all__ = ["DEFAULT_COLUMNS", "DEFAULT_TAGS", "FORMATS", "FormatSpec", "format_record", "make_format_spec"]
