"""Tool schemas: their checks, and whether a call's arguments fit the schema of the tool it names.

Training data (formats.py), the server (a call whose arguments do not fit goes back as content, never as a
broken call) and eval's "format valid" rate all ask the same two questions here. JSON Schema is checked with
`jsonschema` where it is installed (it is not a tuneforge dependency); otherwise, and always for arguments,
structural checks: an object with properties, required names that exist, known JSON types. BFCL and xLAM write
Python type names (`dict`, `float`, `tuple`, `any`, `List[str]`, `str, optional`); they are read as their JSON
counterparts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tuneforge.data.schema import DataError

JSON_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# BFCL / Python spellings of JSON Schema types (BFCL's function docs use them).
TYPE_ALIASES = {
    "dict": "object",
    "float": "number",
    "int": "integer",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
}
_PYTHON_TYPE: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": (list, tuple),
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


def json_type(name: str) -> str:
    """A schema type as JSON Schema names it: BFCL's `dict`, xLAM's `List[str]` or `str, optional` too."""
    base = name.strip().removesuffix(", optional").split("[")[0].strip()
    return TYPE_ALIASES.get(base.lower(), base)


def function_of(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """The function part of a tool: OpenAI's {"type": "function", "function": {...}} or a bare {name, ...}."""
    fn = tool.get("function")
    return fn if isinstance(fn, Mapping) else tool


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(function_of(t).get("name", "")) for t in tools]


def check_tool_schema(tool: Any, where: str) -> None:
    """A DataError naming `where` unless `tool` is a function with a name and an object parameter schema."""
    if not isinstance(tool, Mapping):
        raise DataError(f"{where} must be an object (a tool schema), got {tool!r:.80}")
    fn = function_of(tool)
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where} has no function name: {json.dumps(tool, ensure_ascii=False)[:80]}")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, Mapping):
        raise DataError(f"{where} ({name}): parameters must be a JSON Schema object, got {params!r:.80}")
    problem = _schema_problem(params) or _jsonschema_problem(params)
    if problem:
        raise DataError(f"{where} ({name}): parameters are not a valid JSON Schema: {problem}")


def _schema_problem(params: Mapping[str, Any]) -> str | None:
    kind = _type_of(params)
    if kind not in (None, "object"):
        return f"the top-level type must be 'object', got {params.get('type')!r}"
    props = params.get("properties", {})
    if not isinstance(props, Mapping):
        return f"'properties' must be an object, got {props!r:.60}"
    for key, prop in props.items():
        if not isinstance(prop, Mapping):
            return f"property {key!r} must be a schema object, got {prop!r:.60}"
        t = prop.get("type")
        for one in t if isinstance(t, list) else [t]:
            if one is not None and (not isinstance(one, str) or json_type(one) not in {*JSON_TYPES, "any"}):
                return f"property {key!r} has unknown type {one!r}; JSON Schema types: {', '.join(sorted(JSON_TYPES))}"
    required = params.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return f"'required' must be a list of property names, got {required!r:.60}"
    missing = [r for r in required if r not in props]
    if missing:
        return f"'required' names {', '.join(map(repr, missing))}, which are not in 'properties'"
    return None


def _jsonschema_problem(params: Mapping[str, Any]) -> str | None:
    try:
        import jsonschema
    except ImportError:  # optional: the structural checks above still ran
        return None
    if any(_uses_aliases(params)):
        return None  # BFCL's Python type names are not JSON Schema; the structural check read them
    try:
        jsonschema.Draft202012Validator.check_schema(dict(params))
    except jsonschema.SchemaError as e:
        return e.message
    return None


def _uses_aliases(schema: Any) -> list[bool]:
    if isinstance(schema, Mapping):
        t = schema.get("type")
        own = [isinstance(x, str) and (json_type(x) != x or x == "any") for x in (t if isinstance(t, list) else [t])]
        return own + [b for v in schema.values() for b in _uses_aliases(v)]
    if isinstance(schema, list):
        return [b for v in schema for b in _uses_aliases(v)]
    return []


def _type_of(schema: Mapping[str, Any]) -> str | None:
    t = schema.get("type")
    return json_type(t) if isinstance(t, str) else None


def argument_problem(name: str, arguments: Mapping[str, Any], tools: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a call does not fit the offered tools (unknown name, missing or unknown argument, wrong type); None: fits."""
    by_name = {str(function_of(t).get("name")): function_of(t) for t in tools}
    if name not in by_name:
        return f"calls {name!r}, which is not among the offered tools ({', '.join(by_name) or 'none'})"
    params = by_name[name].get("parameters") or {}
    props = params.get("properties") or {}
    missing = [r for r in params.get("required", []) if r not in arguments]
    if missing:
        return f"{name}: required argument(s) {', '.join(map(repr, missing))} missing"
    unknown = [k for k in arguments if k not in props]
    # JSON Schema allows extra keys unless told not to; a schema that lists its properties is read as the whole
    # list (a call inventing an argument is the commonest wrong call), one that lists none takes anything.
    if unknown and "properties" in params and params.get("additionalProperties") is not True:
        return f"{name}: unknown argument(s) {', '.join(map(repr, unknown))}"
    for key, value in arguments.items():
        prop = props.get(key)
        if isinstance(prop, Mapping) and not _fits(value, prop):
            return f"{name}: argument {key!r}={json.dumps(value, ensure_ascii=False)[:40]} does not fit {_show(prop)}"
    return None


def _fits(value: Any, prop: Mapping[str, Any]) -> bool:
    t = prop.get("type")
    kinds = [json_type(x) for x in (t if isinstance(t, list) else [t]) if isinstance(x, str)]
    ok = not kinds or "any" in kinds or any(_is(value, k) for k in kinds if k in _PYTHON_TYPE)
    enum = prop.get("enum")
    return ok and (not isinstance(enum, list) or value in enum)


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("number", "integer"):
        return False  # JSON keeps true apart from 1
    return isinstance(value, _PYTHON_TYPE[kind])


def _show(prop: Mapping[str, Any]) -> str:
    return json.dumps({k: prop[k] for k in ("type", "enum") if k in prop}, ensure_ascii=False)


__all__ = ["TYPE_ALIASES", "argument_problem", "check_tool_schema", "function_of", "json_type", "tool_names"]
