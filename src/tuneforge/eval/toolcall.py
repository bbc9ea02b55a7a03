"""Tool calls: read them out of a model's answer, compare them with a reference by structure (BFCL-style).

A call is (name, arguments). The answer may hold JSON (`{"name": ..., "arguments": {...}}`, a list of them,
OpenAI's `{"function": {...}}` with arguments as a JSON string, Hermes/Qwen `<tool_call>` blocks) or Python
call syntax (`[f(a=1), g(b="x")]`, the format BFCL asks prompt-only models for). Free text without any of
these is "no call" — the right answer to an irrelevant request.

The reference is BFCL's possible-answer form: one `{function_name: {param: [acceptable values]}}` per expected
call, where "" among the values means the parameter may be left out. Strings compare after BFCL's
normalisation (case, spaces and some punctuation ignored), numbers by value (an int is a valid float),
lists element by element, dicts key by key; parallel calls match in any order.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```[a-zA-Z]*\n?(.*?)```", re.DOTALL)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every call found in `text`, in order; [] when it holds none."""
    blocks = _TOOL_CALL_BLOCK.findall(text)
    if blocks:
        return [c for b in blocks for c in _from_json_text(b)]
    fenced = _FENCE.findall(text)
    for candidate in [*fenced, text]:
        calls = _from_json_text(candidate) or _from_python(candidate)
        if calls:
            return calls
    return []


def _from_json_text(text: str) -> list[ToolCall]:
    decoder = json.JSONDecoder()
    for start, ch in enumerate(text):
        if ch not in "[{":
            continue
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        calls = _from_json_value(value)
        if calls:
            return calls
    return []


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
    except SyntaxError:
        return []
    nodes = tree.elts if isinstance(tree, ast.List | ast.Tuple) else [tree]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call) or node.args:
            return []
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
        except ValueError:
            return []
        calls.append(ToolCall(ast.unparse(node.func), args))
    return calls


# --- comparison with BFCL possible answers -----------------------------------------------------------

_STRING_NOISE = re.compile(r"[ ,./\-_*^]")


def _norm_name(name: str) -> str:
    # OpenAI-style function names cannot hold dots, so BFCL models often answer `math_sqrt` for `math.sqrt`.
    return name.replace(".", "_").lower()


def _norm_string(text: str) -> str:
    return _STRING_NOISE.sub("", text.lower()).replace("'", '"')


def same_value(got: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(expected, int | float):
        return isinstance(got, int | float) and abs(float(got) - float(expected)) < 1e-9
    if isinstance(expected, str):
        return isinstance(got, str) and _norm_string(got) == _norm_string(expected)
    if isinstance(expected, list | tuple):
        return (
            isinstance(got, list | tuple)
            and len(got) == len(expected)
            and all(same_value(g, e) for g, e in zip(got, expected, strict=True))
        )
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return False
        return all(_argument_ok(got, k, v if isinstance(v, list) else [v]) for k, v in expected.items()) and set(
            got
        ) <= set(expected)
    return bool(got == expected)


def _argument_ok(args: dict[str, Any], key: str, acceptable: list[Any]) -> bool:
    if key not in args:
        return "" in acceptable  # "" marks an optional parameter that may be left out
    return any(same_value(args[key], value) for value in acceptable)


def call_matches(call: ToolCall, expected: dict[str, dict[str, list[Any]]]) -> bool:
    """One call against one reference `{name: {param: [acceptable values]}}`."""
    ((name, params),) = expected.items()
    if _norm_name(call.name) != _norm_name(name):
        return False
    if not set(call.arguments) <= set(params):
        return False  # an argument the reference does not know
    return all(_argument_ok(call.arguments, key, list(values)) for key, values in params.items())


def calls_match(calls: Sequence[ToolCall], expected: Sequence[dict[str, dict[str, list[Any]]]]) -> bool:
    """All expected calls made, each by a distinct call, in any order, and nothing else; [] expects no call."""
    if len(calls) != len(expected):
        return False
    return _assign(list(calls), list(expected), lambda c, e: call_matches(c, e))


def names_match(calls: Sequence[ToolCall], expected: Sequence[dict[str, Any]]) -> bool:
    """The right functions were called (the arguments not checked)."""
    got = sorted(_norm_name(c.name) for c in calls)
    return got == sorted(_norm_name(next(iter(e))) for e in expected)


def _assign(calls: list[ToolCall], expected: list[Any], ok: Any) -> bool:
    # Backtracking over a handful of parallel calls; BFCL items have at most a few.
    if not expected:
        return True
    first, rest = expected[0], expected[1:]
    return any(ok(call, first) and _assign(calls[:i] + calls[i + 1 :], rest, ok) for i, call in enumerate(calls))


__all__ = ["ToolCall", "call_matches", "calls_match", "names_match", "parse_tool_calls", "same_value"]
