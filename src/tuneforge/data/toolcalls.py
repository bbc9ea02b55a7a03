"""The tool-call text: the one module that writes tool calls into a model's turn and reads them back out.

tuneforge trains on the Hermes/Qwen convention, one tagged JSON block per call:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Oslo"}}
    </tool_call>

`render_calls` writes it (data formats for training, serve for the history a client sends), `parse_calls`
reads a model's answer (serve, eval). Reading is lenient, because eval also scores models tuneforge did not
train: besides tagged blocks it takes a bare JSON call or list of calls (in the text or in a ``` fence),
OpenAI's `{"function": {...}}` with arguments as a JSON string, BFCL's `{name: {arguments}}`, and Python call
syntax (`[f(a=1), g(b="x")]`, the format BFCL asks prompt-only models for). Free text without any of these is
"no call" — the right answer to an irrelevant request. `calls_from_json` is the strict reader for training
data, where a malformed call is the user's to fix.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.schema import DataError


@dataclass(frozen=True)
class ToolCall:
    """One call: the function's name and its arguments; `id` only where an API needs to pair call and result."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


class ToolCallError(DataError):
    pass


_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```[a-zA-Z]*\n?(.*?)```", re.DOTALL)


def render_calls(calls: Sequence[ToolCall], content: str = "") -> str:
    """`content` followed by one `<tool_call>` block per call: the text a model is trained to say."""
    blocks = [
        "<tool_call>\n" + json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False) + "\n</tool_call>"
        for c in calls
    ]
    return "\n".join([content, *blocks]).strip() if blocks else content


# The fallback for templates that ignore `tools` (docs/tooluse.md): Qwen2.5's own words, so a model trained with
# it and one whose template writes them natively see the same instructions.
TOOLS_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>\n'
    "If none of the functions fits the request, answer in plain text and call nothing."
)


def tools_system_text(tools: Sequence[dict[str, Any]], system: str = "") -> str:
    """The system turn with the tool schemas (one JSON line each) after the system prompt, if there is one."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return "\n\n".join(p for p in (system, TOOLS_SYSTEM.format(tools=listed)) if p)


def split_tagged(text: str) -> tuple[str, list[ToolCall]]:
    """Only the `<tool_call>` blocks `render_calls` writes: (the rest, the calls). For turning stored training
    text back into structured calls (native templates), where parse_calls' lenient readings would be guesses."""
    blocks = [b for b in _BLOCK.finditer(text) if b.group(0).rstrip().endswith("</tool_call>")]
    return _from_blocks(text, blocks) if blocks else (text, [])


def opens_call(text: str) -> int:
    """Where a call may begin in generated text (a `<tool_call>` tag, or a bare JSON call at the start); -1: none.

    Streaming holds text back from here until it is known whether it is a call.
    """
    at = text.find("<tool_call>")
    if at >= 0:
        return at
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") or stripped.startswith("```"):
        return len(text) - len(stripped)
    partial = "<tool_call>"
    for n in range(len(partial) - 1, 0, -1):  # a tag cut in the middle by the stream: "<tool_"
        if text.endswith(partial[:n]):
            return len(text) - n
    return -1


def parse_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(the text without its calls, the calls in order); (text, []) when it holds none."""
    blocks = list(_BLOCK.finditer(text))
    if blocks:
        return _from_blocks(text, blocks)
    fences = [(m.start(), m.end(), m.group(1)) for m in _FENCE.finditer(text)]
    for start, end, candidate in [*fences, (0, len(text), text)]:
        in_json = _from_json_text(candidate)
        if in_json:
            calls, json_start, json_end = in_json
            if end - start == len(candidate):  # the whole text, not a fence: only the JSON itself goes
                start, end = json_start, json_end
            return (text[:start] + text[end:]).strip(), calls
        calls = _from_python(candidate)
        if calls:
            return (text[:start] + text[end:]).strip(), calls
    return text, []


def _from_blocks(text: str, blocks: list[re.Match[str]]) -> tuple[str, list[ToolCall]]:
    calls: list[ToolCall] = []
    kept, at = [], 0
    for block in blocks:
        found = _from_json_text(block.group(1))
        if found:  # a block that does not parse stays in the content: never a broken call
            calls.extend(found[0])
            kept.append(text[at : block.start()])
            at = block.end()
    return ("".join([*kept, text[at:]]).strip(), calls) if calls else (text, [])


def calls_from_json(value: Any, where: str) -> list[ToolCall]:
    """Calls stored in training data: JSON text, one object or a list; OpenAI's `function` wrapper allowed.

    Strict, unlike `parse_calls`: anything that is not a call is a ToolCallError naming `where`.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ToolCallError(f"{where} is not a JSON tool call ({e.msg}): {value!r:.80}") from None
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ToolCallError(f"{where} holds no tool call")
    return [_strict_call(item, f"{where}[{i}]" if isinstance(value, list) else where) for i, item in enumerate(items)]


def _strict_call(item: Any, where: str) -> ToolCall:
    call = item.get("function", item) if isinstance(item, dict) else item
    if not (isinstance(call, dict) and isinstance(call.get("name"), str) and call["name"]):
        raise ToolCallError(f"{where} must be an object with a 'name' and 'arguments', got {item!r:.80}")
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):  # OpenAI stores arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ToolCallError(f"{where}.arguments is not valid JSON ({e.msg}): {args!r:.80}") from None
    if not isinstance(args, dict):
        raise ToolCallError(f"{where}.arguments must be a JSON object, got {args!r:.80}")
    call_id = item.get("id") if isinstance(item, dict) else None
    return ToolCall(call["name"], args, call_id if isinstance(call_id, str) else None)


def _from_json_text(text: str) -> tuple[list[ToolCall], int, int] | None:
    """The first JSON value in `text` that is a call or a list of calls, with where it starts and ends."""
    decoder = json.JSONDecoder()
    for start, ch in enumerate(text):
        if ch not in "[{":
            continue
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        calls = _from_json_value(value)
        if calls:
            return calls, start, end
    return None


def _from_json_value(value: Any) -> list[ToolCall]:
    if isinstance(value, list):
        out = [c for v in value for c in _from_json_value(v)]
        return out if len(out) == len(value) else []
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("function"), dict):  # OpenAI: {"type": "function", "function": {...}}
        return _from_json_value(value["function"])
    if isinstance(value.get("tool_calls"), list):
        return _from_json_value(value["tool_calls"])
    name = value.get("name")
    if isinstance(name, str):
        args = value.get("arguments", value.get("parameters", {}))
        if isinstance(args, str):  # OpenAI sends arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return []
        return [ToolCall(name, args)] if isinstance(args, dict) else []
    if len(value) == 1:  # BFCL's own {name: {arguments}} shape
        ((key, args),) = value.items()
        if isinstance(args, dict):
            return [ToolCall(str(key), args)]
    return []


def _from_python(text: str) -> list[ToolCall]:
    text = text.strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError):  # ValueError: a null byte in the text
        return []
    nodes = tree.elts if isinstance(tree, ast.List | ast.Tuple) else [tree]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call) or node.args:
            return []
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return []
        calls.append(ToolCall(ast.unparse(node.func), args))
    return calls


__all__ = [
    "TOOLS_SYSTEM",
    "ToolCall",
    "ToolCallError",
    "calls_from_json",
    "opens_call",
    "parse_calls",
    "render_calls",
    "split_tagged",
    "tools_system_text",
]
