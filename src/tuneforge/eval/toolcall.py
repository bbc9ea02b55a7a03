"""Tool calls compared with a reference by structure (BFCL-style AST match).

A call is data.toolcalls.ToolCall (name, arguments); data.toolcalls.parse_calls reads it out of an answer.
The reference is BFCL's possible-answer form: one `{function_name: {param: [acceptable values]}}` per expected
call, where "" among the values means the parameter may be left out. Strings compare after BFCL's
normalisation (case, spaces and some punctuation ignored), numbers by value (an int is a valid float),
lists element by element, dicts key by key; parallel calls match in any order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from tuneforge.data.toolcalls import ToolCall
from tuneforge.data.toolschema import argument_problem, function_of

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


def format_problem(text: str, calls: Sequence[ToolCall], tools: str | None) -> str | None:
    """Why an answer is not in a valid call format (None: it is): a `<tool_call>` block that did not parse, or a
    call to a function not offered, or arguments that do not fit its schema. Plain text is valid."""
    if "<tool_call>" in text and text.count("<tool_call>") != len(calls):
        return "a <tool_call> block that is not a JSON call"
    offered = json.loads(tools) if tools else None
    if not calls or not offered:
        return None
    by_norm = [{**t, "name": _norm_name(str(function_of(t).get("name", "")))} for t in map(function_of, offered)]
    for call in calls:
        problem = argument_problem(_norm_name(call.name), call.arguments, by_norm)
        if problem:
            return problem
    return None


def _assign(calls: list[ToolCall], expected: list[Any], ok: Any) -> bool:
    # Backtracking over a handful of parallel calls; BFCL items have at most a few.
    if not expected:
        return True
    first, rest = expected[0], expected[1:]
    return any(ok(call, first) and _assign(calls[:i] + calls[i + 1 :], rest, ok) for i, call in enumerate(calls))


__all__ = ["call_matches", "calls_match", "format_problem", "names_match", "same_value"]
