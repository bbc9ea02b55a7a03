"""Tool-use training conversations from a file of JSON schemas: ToolLLM's construction, offline, no teacher.

ToolLLM samples APIs, asks ChatGPT for instructions that need them and for the calls; here the instructions come
from templates and the argument values are sampled from each parameter's schema (`enum`, `examples`,
`default`, bounds; else by type and name), so the calls are right by construction. Each conversation offers
the needed tool among distractors sampled from the same file (BFCL "multiple"), and is one of:

  single      one call, its result, an answer that uses the result
  parallel    two calls in one turn (the same tool twice, or two tools), both results, one answer
  irrelevant  a request for a function that is not offered, or small talk: no call, a plain answer

Schema file: JSON (a list of tools, or {"tools": [...]}) or JSONL (a tool per line); a tool is OpenAI's
{"type": "function", "function": {...}} or the bare function. Optional keys, removed before the tools are shown:
`x-instructions` (templates with {param} slots; a slot may be left out when its parameter is optional),
`x-result` (a result object, values may hold {param} slots), `x-answer` (a template with {param} and {result}).

    python -m tuneforge.data.recipes.tools SCHEMAS.json --out DIR --name NAME [--n 1000] [--seed 0]

writes DIR/NAME_tools.jsonl (openai format: messages with `tool_calls`, `tools`) and registers NAME_tools in
DIR/dataset_info.json, so `data: {dataset_dir: DIR, datasets: [{name: NAME_tools}]}` trains on it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneforge.data.schema import DataError
from tuneforge.data.toolschema import check_tool_schema, function_of, json_type

KINDS = {"single": 0.55, "parallel": 0.15, "irrelevant": 0.30}
# 20 company-internal APIs, none of them in BFCL; beside the shipped data so that the package carries it
SCHEMAS = Path(__file__).resolve().parents[1] / "synthetic" / "tool_schemas.json"
SMALL_TALK = [
    "Tell me a joke about computers.",
    "What is the capital of Australia?",
    "Write a haiku about autumn rain.",
    "How are you today?",
    "Explain what a prime number is.",
    "Who wrote Pride and Prejudice?",
    "Give me three tips for better sleep.",
    "Translate 'good morning' into Spanish.",
]
_WORDS = {
    "city": ["Oslo", "Lisbon", "Nairobi", "Osaka", "Denver", "Tallinn", "Porto", "Quito"],
    "name": ["Ada Moreau", "Ravi Patel", "Lena Fischer", "Tom Okafor", "Mia Chen"],
    "email": ["ada@example.com", "ravi.patel@example.org", "lena@example.net"],
    "date": ["2025-03-14", "2025-07-01", "2025-11-23", "2026-01-09"],
    "time": ["09:30", "14:00", "16:45", "11:15"],
    "id": ["A-1042", "B-7731", "C-0098", "D-5120"],
}
_SLOT = re.compile(r"\{(\w+)\}")


def load_schemas(path: Path) -> list[dict[str, Any]]:
    """The tools of a JSON / JSONL file, each checked (a DataError names the file and the entry)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = [json.loads(line) for line in text.splitlines() if line.strip()]
    tools = value.get("tools") if isinstance(value, dict) else value
    if not isinstance(tools, list) or not tools:
        raise DataError(f"{path}: expected a list of tool schemas (or {{'tools': [...]}})")
    for i, tool in enumerate(tools):
        check_tool_schema(tool, f"{path}: tool {i}")
    names = [function_of(t)["name"] for t in tools]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: tool names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return [dict(function_of(t)) for t in tools]


def shown(fn: Mapping[str, Any]) -> dict[str, Any]:
    """The tool as the prompt shows it: OpenAI's form, without the recipe's x- keys and property examples."""
    params = json.loads(json.dumps(fn.get("parameters", {"type": "object", "properties": {}})))
    for prop in params.get("properties", {}).values():
        prop.pop("examples", None)
    clean = {k: v for k, v in fn.items() if not k.startswith("x-") and k != "parameters"}
    return {"type": "function", "function": {**clean, "parameters": params}}


def sample_value(name: str, prop: Mapping[str, Any], rng: random.Random) -> Any:
    for key in ("enum", "examples"):
        if isinstance(prop.get(key), list) and prop[key]:
            return rng.choice(prop[key])
    kind = json_type(str(prop.get("type", "string")))
    if kind == "integer":
        return rng.randint(int(prop.get("minimum", 1)), int(prop.get("maximum", 20)))
    if kind == "number":
        return round(rng.uniform(float(prop.get("minimum", 1)), float(prop.get("maximum", 100))), 1)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        given = prop.get("items")
        items: Mapping[str, Any] = given if isinstance(given, Mapping) else {"type": "string"}
        return [sample_value(name, items, rng) for _ in range(rng.randint(1, 3))]
    if "default" in prop:
        return prop["default"]
    pool = next((v for k, v in _WORDS.items() if k in name.lower()), None)
    return rng.choice(pool) if pool else f"{name.replace('_', ' ')} {rng.randint(1, 99)}"


def sample_arguments(fn: Mapping[str, Any], rng: random.Random, everything: bool = False) -> dict[str, Any]:
    params = fn.get("parameters") or {}
    props, required = params.get("properties") or {}, set(params.get("required") or [])
    return {k: sample_value(k, p, rng) for k, p in props.items() if everything or k in required or rng.random() < 0.5}


def request(fn: Mapping[str, Any], rng: random.Random) -> tuple[str, dict[str, Any]]:
    """(an instruction, the arguments it asks for): every value said is called, nothing else is.

    A template names some parameters; the call gets exactly those (a template must name all required ones).
    """
    required = set((fn.get("parameters") or {}).get("required") or [])
    args = sample_arguments(fn, rng, everything=True)
    templates = [t for t in fn.get("x-instructions") or [] if required <= set(_SLOT.findall(t)) <= set(args)]
    if templates:
        chosen = rng.choice(templates)
        said = {k: v for k, v in args.items() if k in _SLOT.findall(chosen)}
        return chosen.format(**{k: _say(v) for k, v in said.items()}), said
    said = {k: v for k, v in args.items() if k in required or rng.random() < 0.5}
    return instruction(fn, said, rng), said


def instruction(fn: Mapping[str, Any], args: Mapping[str, Any], rng: random.Random) -> str:
    desc = str(fn.get("description") or fn["name"].replace("_", " ")).rstrip(".")
    given = ", ".join(f"{k.replace('_', ' ')} {_say(v)}" for k, v in args.items())
    forms = ["{d}: {g}.", "Please {d_lc}, with {g}.", "Could you {d_lc}? Use {g}."]
    return rng.choice(forms).format(d=desc, d_lc=desc[:1].lower() + desc[1:], g=given or "no arguments")


def _lower_first(text: str, args: Mapping[str, Any]) -> str:
    """'Find X' -> 'find X' mid-sentence, unless the first word is a value ('E-5120 needs ...', 'Mia ...')."""
    first = text.split(" ", 1)[0].strip(",.:?")
    return text if any(first in _say(v) for v in args.values()) else text[:1].lower() + text[1:]


def _say(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def result_of(fn: Mapping[str, Any], args: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    template = fn.get("x-result")
    if isinstance(template, Mapping):
        fill = {k: _say(v) for k, v in args.items()} | {"n": str(rng.randint(2, 999))}
        return {
            k: _SLOT.sub(lambda m: fill.get(m[1], m[0]), v) if isinstance(v, str) else v for k, v in template.items()
        }
    return {"status": "ok", "reference": f"{fn['name'][:3].upper()}-{rng.randint(1000, 9999)}", **args}


def answer_of(fn: Mapping[str, Any], args: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    summary = ", ".join(f"{k.replace('_', ' ')}: {_say(v)}" for k, v in result.items())
    template = fn.get("x-answer")
    if isinstance(template, str):
        return _SLOT.sub(
            lambda m: _say({**args, **result}.get(m[1], summary)) if m[1] != "result" else summary, template
        )
    return f"Done with {fn['name'].replace('_', ' ')}. {summary[:1].upper()}{summary[1:]}."


def conversation(
    tools: Sequence[Mapping[str, Any]], kind: str, rng: random.Random, distractors: int = 3
) -> dict[str, Any]:
    """One record in the openai format; `kind` is single, parallel or irrelevant; 0..distractors other tools."""
    need = rng.sample(list(tools), 2 if kind == "parallel" and rng.random() < 0.5 and len(tools) > 1 else 1)
    others = [t for t in tools if t not in need]
    offered = need + rng.sample(others, min(len(others), rng.randint(0, distractors)))
    if kind == "irrelevant":
        if rng.random() < 0.5 or not others:
            offered, ask = offered[1:] or others[:1], rng.choice(SMALL_TALK)
            names = ", ".join(t["name"] for t in offered)
            reply = f"None of my functions ({names}) helps with that, so I answer without calling one."
        else:
            ask = request(need[0], rng)[0]
            offered = offered[1:] or others[:1]
            reply = (
                f"I cannot do that: none of the available functions ({', '.join(t['name'] for t in offered)}) does it."
            )
        rng.shuffle(offered)
        return record([{"role": "user", "content": ask}, {"role": "assistant", "content": reply}], offered)
    fns = need * 2 if kind == "parallel" and len(need) == 1 else need
    asked = [request(fn, rng) for fn in fns]
    calls = [(fn, a) for fn, (_, a) in zip(fns, asked, strict=True)]
    ask = asked[0][0] + "".join(f" Also, {_lower_first(q, a)}" for q, a in asked[1:])
    results = [result_of(fn, a, rng) for fn, a in calls]
    msgs: list[dict[str, Any]] = [{"role": "user", "content": ask}]
    msgs.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": fn["name"], "arguments": json.dumps(a, ensure_ascii=False)}}
                for fn, a in calls
            ],
        }
    )
    msgs += [{"role": "tool", "content": json.dumps(r, ensure_ascii=False)} for r in results]
    answer = " ".join(answer_of(fn, a, r) for (fn, a), r in zip(calls, results, strict=True))
    msgs.append({"role": "assistant", "content": answer})
    rng.shuffle(offered)
    return record(msgs, offered)


def record(messages: list[dict[str, Any]], offered: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"messages": messages, "tools": [shown(t) for t in offered]}


def tool_conversations(
    tools: Sequence[Mapping[str, Any]], n: int, seed: int = 0, distractors: int = 3
) -> list[dict[str, Any]]:
    """n conversations, the kinds in the KINDS proportions, reproducible from `seed`."""
    rng = random.Random(seed)
    kinds = [k for k, share in KINDS.items() for _ in range(round(share * n))][:n]
    kinds += ["single"] * (n - len(kinds))
    rng.shuffle(kinds)
    return [conversation(tools, kind, rng, distractors) for kind in kinds]


def write(schemas: Path, out: Path, name: str, n: int = 1000, seed: int = 0) -> Path:
    from tuneforge.data.recipes import register  # the package imports the other recipes: import on use

    records = tool_conversations(load_schemas(schemas), n, seed)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}_tools.jsonl"
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    register(out, {f"{name}_tools": {"file_name": target.name, "formatting": "openai"}}, True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuneforge.data.recipes.tools", description=__doc__.split("\n")[0])
    p.add_argument("schemas", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        target = write(args.schemas, args.out, args.name, args.n, args.seed)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {target} ({args.n} conversations); dataset {args.name}_tools in {args.out}/dataset_info.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
