"""BFCL prompts go through the one renderer (the fallback text or the template's own), and the format-valid rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA
from tests.tiny import build_tokenizer
from tuneforge.config import RunConfig, TaskSpec
from tuneforge.data.toolcalls import ToolCall, parse_calls, render_calls
from tuneforge.eval.prompts import TOOL_SYSTEM, Item
from tuneforge.eval.readers import Example, read_bfcl
from tuneforge.eval.run import resolve_models
from tuneforge.eval.tasks import Response, build_task
from tuneforge.eval.toolcall import format_problem

BFCL = SHARED_DATA / "bfcl"
ADD = {
    "name": "math.add",
    "description": "Add two integers",
    "parameters": {
        "type": "dict",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}


class FakeLM:
    def __init__(self, template: str, tool_format: str = "auto") -> None:
        self.tokenizer = build_tokenizer(template)
        self.tool_format = tool_format


def example(i: str = "simple_0") -> Example:
    msgs = ({"role": "user", "content": "What is 1 + 2?"},)
    calls = () if i.startswith("irrelevance") else ({"math.add": {"a": [1], "b": [2]}},)
    return Example(i, "What is 1 + 2?", json.dumps(calls), messages=msgs, tools=json.dumps([ADD]), calls=calls)


@pytest.mark.parametrize("template", ["chatml", "qwen25", "llama31"])
def test_bfcl_prompts_show_the_functions_through_the_renderer(template: str) -> None:
    spec = TaskSpec(type="tool_call", format="bfcl", path="x")
    task = build_task(spec, [example()], "eval.tasks[0]")
    (req,) = task.prepare([Item(example())], FakeLM(template))  # type: ignore[arg-type]
    text = FakeLM(template).tokenizer.decode(req.prompt)
    assert '"math.add"' in text and "Add two integers" in text
    assert ("If none of the functions fits" in text) is (template == "chatml")  # the fallback only where needed
    assert TOOL_SYSTEM.split("{tools}")[0] in text or template != "chatml"


def test_eval_renders_tools_the_way_the_run_trained(tmp_path: Path, tiny_model_dir: Path) -> None:
    # A run trained with data.tool_format=hermes is evaluated with the prompt it trained on, even where the
    # template has a tool prompt of its own (qwen25 here).
    run = tmp_path / "runs" / "tools"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  path: {tiny_model_dir}\ndata:\n  tool_format: hermes\n", "utf-8")
    (run / "data_stats.json").write_text(json.dumps({"tool_format": "hermes"}), encoding="utf-8")
    cfg = RunConfig.model_validate({"name": "e", "eval": {"base": False}})
    (ref,) = resolve_models(cfg, [run])
    assert (ref.label, ref.tool_format) == ("tools", "hermes")
    task = build_task(TaskSpec(type="tool_call", format="bfcl", path="x"), [example()], "eval.tasks[0]")
    texts = {}
    for fmt in ("auto", ref.tool_format):
        lm = FakeLM("qwen25", fmt)
        (req,) = task.prepare([Item(example())], lm)  # type: ignore[arg-type]
        texts[fmt] = lm.tokenizer.decode(req.prompt)
    assert "If none of the functions fits" in texts["hermes"] and "If none of the functions fits" not in texts["auto"]


def test_format_valid_rate() -> None:
    tools = json.dumps([ADD])
    ok = render_calls([ToolCall("math_add", {"a": 1, "b": 2})])
    assert format_problem(ok, parse_calls(ok)[1], tools) is None  # math_add for math.add, as BFCL allows
    assert format_problem("No function fits.", [], tools) is None
    wrong = render_calls([ToolCall("math.add", {"a": "one", "b": 2})])
    assert "does not fit" in (format_problem(wrong, parse_calls(wrong)[1], tools) or "")
    broken = "<tool_call>\n{math.add(1, 2)}\n</tool_call>"
    assert format_problem(broken, parse_calls(broken)[1], tools) == "a <tool_call> block that is not a JSON call"
    spec = TaskSpec(type="tool_call", format="bfcl", path="x")
    items = [example(), example("simple_1"), example("irrelevance_0")]
    task = build_task(spec, items, "t")
    texts = [render_calls([ToolCall("math.add", {"a": 1, "b": 2})]), wrong, "I cannot help with that."]
    scores = task.score([Item(e) for e in items], [Response(text=t) for t in texts])
    got: dict[str, Any] = {k: r.reduce(r.rows) for k, r in scores.metrics.items()}
    assert got == {"accuracy": pytest.approx(2 / 3), "name_accuracy": 1.0, "format_valid": pytest.approx(2 / 3)}
    assert scores.predictions[1]["format_problem"].startswith("math_add: argument 'a'")


@pytest.mark.skipif(not (BFCL / "BFCL_v4_multiple.json").is_file(), reason="BFCL not in ../shared/data/bfcl")
def test_bfcl_items_render_with_their_functions() -> None:
    tok = build_tokenizer("chatml")
    for name in ("simple_python", "multiple", "parallel", "irrelevance"):
        items = read_bfcl(BFCL / f"BFCL_v4_{name}.json", "test")[:3]
        task = build_task(TaskSpec(type="tool_call", format="bfcl", path="x"), items, "t")
        for item, req in zip(items, task.prepare([Item(e) for e in items], FakeLM("chatml")), strict=True):  # type: ignore[arg-type]
            text = tok.decode(req.prompt)
            assert all(f'"{f["name"]}"' in text for f in json.loads(item.tools or "[]"))
