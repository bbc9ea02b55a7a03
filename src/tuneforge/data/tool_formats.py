"""The public tool-use layouts, as FORMATS rows (formats.py), and the checks every tool conversation passes.

  glaive     glaive-function-calling text: `system` ("SYSTEM: ... - {schema} {schema}") and `chat`
             ("USER: ..." / "ASSISTANT: <functioncall> {...}" / "FUNCTION RESPONSE: ..." turns)
  xlam       xLAM / APIGen: `query`, `tools` (xLAM's parameter maps, turned into JSON Schema), `answers` (calls)
  toolbench  ToolBench answer files: `answer_generation.train_messages` (the longest trajectory) and `function`
  lf_v1      LLaMA-Factory's v1 messages: content parts of type text / reasoning / tool_call, per-message
             `loss_weight` (0 or 1: a turn left out of the loss, or trained)

Every call becomes data.toolcalls' text; `check_tool_use` then refuses what would teach a model nonsense: a tool
schema that is not JSON Schema, a call naming a tool the sample does not offer, a tool result nobody asked for.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from tuneforge.data.schema import Conversation, DataError, Message
from tuneforge.data.toolcalls import ToolCall, calls_from_json, render_calls, split_tagged
from tuneforge.data.toolschema import check_tool_schema, tool_names

if TYPE_CHECKING:
    from tuneforge.data.formats import FormatSpec

# What the assistant says where a dataset's answer is "no call" and holds no words (xLAM's `answers: []`).
NO_CALL_TEXT = "None of the available functions fits this request, so I cannot do it with a function call."
THINK = "<think>\n{}\n</think>"  # reasoning parts, as Qwen3 / LLaMA-Factory write them (then a blank line)


def check_tool_use(conv: Conversation) -> None:
    """Schemas valid, calls to offered tools only, every tool result preceded by a call (DataError otherwise)."""
    tools = json.loads(conv.tools) if conv.tools else []
    tools = tools if isinstance(tools, list) else [tools]
    for i, tool in enumerate(tools):
        check_tool_schema(tool, f"tools[{i}]")
    names = tool_names(tools)
    called = False
    for i, m in enumerate(conv.messages):
        if m.role == "assistant":
            calls = split_tagged(m.content)[1]
            unknown = [c.name for c in calls if tools and c.name not in names]
            if unknown:
                raise DataError(
                    f"message {i} calls {', '.join(map(repr, unknown))}, which the sample's tools do not offer "
                    f"(offered: {', '.join(names)})"
                )
            called = bool(calls)
        elif m.role == "tool" and not called:
            raise DataError(f"message {i} is a tool result with no tool call before it")
        elif m.role not in ("tool", "system"):
            called = False


def _col(record: dict[str, Any], spec: FormatSpec, fld: str) -> Any:
    column = spec.columns.get(fld)
    if column is None or column not in record:
        have = ", ".join(map(repr, record)) or "none"
        raise DataError(f"missing column {column!r} (the {fld!r} field); this record has columns: {have}")
    return record[column]


def _json(value: Any, where: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else None
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not valid JSON ({e.msg}): {value!r:.80}") from None
    return value


def _tools_text(tools: Any) -> str | None:
    return json.dumps(tools, ensure_ascii=False) if tools else None


# ---- glaive --------------------------------------------------------------------------------------------

_GLAIVE_TURN = re.compile(r"(?:^|\n)\s*(USER|ASSISTANT|FUNCTION RESPONSE):\s?")
_GLAIVE_ARGS = re.compile(r"(\"arguments\"\s*:\s*)'(.*)'(\s*\}\s*)$", re.DOTALL)  # glaive quotes them with '


def glaive(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    system_text = str(_col(record, spec, "system") or "")
    preamble, tools = _glaive_system(system_text)
    chat = _col(record, spec, "chat")
    if not isinstance(chat, str):
        raise DataError(f"column {spec.columns['chat']!r} must be text, got {type(chat).__name__}")
    parts = _GLAIVE_TURN.split(chat)
    if len(parts) < 3:
        raise DataError(f"column {spec.columns['chat']!r} has no 'USER:' / 'ASSISTANT:' turns: {chat!r:.80}")
    roles = {"USER": "user", "ASSISTANT": "assistant", "FUNCTION RESPONSE": "tool"}
    messages = [Message("system", preamble)] if preamble else []
    for n, (tag, text) in enumerate(zip(parts[1::2], parts[2::2], strict=True)):
        text = text.replace("<|endoftext|>", "").strip()
        if tag == "ASSISTANT" and "<functioncall>" in text:
            said, _, call = text.partition("<functioncall>")
            fixed = _GLAIVE_ARGS.sub(lambda m: m.group(1) + m.group(2) + m.group(3), call.strip())
            text = render_calls(calls_from_json(fixed, f"chat turn {n} <functioncall>"), said.strip())
        messages.append(Message(roles[tag], text))  # type: ignore[arg-type]
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=None)
    if last is None:
        raise DataError(f"column {spec.columns['chat']!r} has no 'ASSISTANT:' turn, so there is nothing to train on")
    messages = messages[: last + 1]  # a trailing USER: turn has no answer to learn
    return Conversation(tuple(messages), _tools_text(tools))


def _glaive_system(text: str) -> tuple[str, list[Any]]:
    text = re.sub(r"^\s*SYSTEM:\s*", "", text)
    decoder, tools, at, first = json.JSONDecoder(), [], 0, None
    while (start := text.find("{", at)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            raise DataError(
                f"a function in the system text is not valid JSON ({e.msg}): {text[start:][:80]!r}"
            ) from None
        tools.append(value)
        first = start if first is None else first
        at = end
    preamble = text[:first] if first is not None else text
    return preamble.strip().rstrip("-").strip(), tools


# ---- xLAM / APIGen -------------------------------------------------------------------------------------

_XLAM_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array"}


def xlam(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    query = _col(record, spec, "query")
    if not isinstance(query, str) or not query.strip():
        raise DataError(f"column {spec.columns['query']!r} must be non-empty text, got {query!r:.60}")
    tools = _json(_col(record, spec, "tools"), f"column {spec.columns['tools']!r}") or []
    if not isinstance(tools, list):
        raise DataError(f"column {spec.columns['tools']!r} must be a list of tools, got {tools!r:.60}")
    answers = _json(_col(record, spec, "answers"), f"column {spec.columns['answers']!r}") or []
    calls = calls_from_json(answers, f"column {spec.columns['answers']!r}") if answers else []
    said = render_calls(calls) if calls else NO_CALL_TEXT
    return Conversation((Message("user", query), Message("assistant", said)), _tools_text(_xlam_tools(tools)))


def _xlam_tools(tools: list[Any]) -> list[Any]:
    """xLAM writes `parameters: {name: {type: "str, optional", description, default}}`; JSON Schema wants an object."""
    out = []
    for t in tools:
        params = t.get("parameters") if isinstance(t, dict) else None
        if not isinstance(params, dict) or "properties" in params or params.get("type") == "object":
            out.append(t)
            continue
        props, required = {}, []
        for name, p in params.items():
            p = p if isinstance(p, dict) else {"description": str(p)}
            raw = str(p.get("type", "")).strip()
            optional = raw.endswith(", optional") or "default" in p
            base = raw.removesuffix(", optional").split("[")[0].strip().lower()
            prop = {k: v for k, v in p.items() if k != "type"}
            if base:
                prop["type"] = _XLAM_TYPES.get(base, "object" if base == "dict" else base)
            props[name] = prop
            if not optional:
                required.append(name)
        out.append({**t, "parameters": {"type": "object", "properties": props, "required": required}})
    return out


# ---- ToolBench -----------------------------------------------------------------------------------------


def toolbench(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    gen = record.get("answer_generation", record)
    if not isinstance(gen, dict) or not gen.get("train_messages"):
        valid = gen.get("valid_data") if isinstance(gen, dict) else None
        raise DataError(
            "no answer_generation.train_messages: not a ToolBench answer file, or one without a training "
            f"trajectory (valid_data={valid!r})"
        )
    conv = max(gen["train_messages"], key=len)
    messages = []
    for i, m in enumerate(conv):
        role = {"function": "tool"}.get(m.get("role"), m.get("role"))
        content = m.get("content") or ""
        if role == "assistant" and m.get("function_call"):
            content = render_calls(calls_from_json(m["function_call"], f"train_messages[{i}].function_call"), content)
        if role not in ("system", "user", "assistant", "tool"):
            raise DataError(f"train_messages[{i}] has unknown role {m.get('role')!r}")
        messages.append(Message(role, str(content)))
    return Conversation(tuple(messages), _tools_text(gen.get("function")))


# ---- LLaMA-Factory v1 ----------------------------------------------------------------------------------


def lf_v1(record: dict[str, Any], spec: FormatSpec) -> Conversation:
    col = spec.columns["messages"]
    turns = _col(record, spec, "messages")
    if not isinstance(turns, list) or not turns:
        raise DataError(f"column {col!r} must be a non-empty list of messages")
    messages = []
    for i, m in enumerate(turns):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise DataError(f"{col}[{i}] must be an object with role system, user, assistant or tool: {m!r:.60}")
        text = _lf_content(m.get("content"), f"{col}[{i}].content")
        weight = m.get("loss_weight")
        default = 1.0 if m["role"] == "assistant" else 0.0
        weight = default if weight is None else weight
        if weight not in (0, 1, 0.0, 1.0):
            raise DataError(f"{col}[{i}].loss_weight={weight!r}: only 0 (not trained) or 1 (trained) are supported")
        if weight and m["role"] != "assistant":
            raise DataError(
                f"{col}[{i}].loss_weight=1 on a {m['role']} turn: only assistant turns are trained "
                "(data.train_on_prompt=true trains on every token)"
            )
        messages.append(Message(m["role"], text, trained=bool(weight) or m["role"] != "assistant"))
    if not any(m.role == "assistant" and m.trained for m in messages):
        raise DataError(f"column {col!r} has no trained assistant message (all have loss_weight 0)")
    tools = _json(record.get(spec.columns.get("tools") or ""), f"column {spec.columns.get('tools')!r}")
    return Conversation(tuple(messages), _tools_text(tools))


def _lf_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataError(f"{where} must be text or a list of parts, got {content!r:.60}")
    text: list[str] = []
    thought: list[str] = []
    calls: list[ToolCall] = []
    for j, part in enumerate(content):
        kind, value = (part.get("type"), part.get("value")) if isinstance(part, dict) else (None, None)
        if not isinstance(value, str) or kind not in ("text", "reasoning", "tool_call"):
            raise DataError(f"{where}[{j}] must be {{type: text|reasoning|tool_call, value: text}}, got {part!r:.60}")
        if kind == "tool_call":
            calls += calls_from_json(value, f"{where}[{j}]")
        else:
            (thought if kind == "reasoning" else text).append(value)
    said = "\n\n".join(p for p in (THINK.format("\n".join(thought).strip()) if thought else "", "\n".join(text)) if p)
    return render_calls([ToolCall(c.name, c.arguments) for c in calls], said)


__all__ = ["NO_CALL_TEXT", "check_tool_use", "glaive", "lf_v1", "toolbench", "xlam"]
