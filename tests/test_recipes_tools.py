"""The tools recipe: schemas -> conversations whose calls fit the schemas and whose requests say every value
called; irrelevant requests call nothing; the shipped set is disjoint from BFCL and trains as is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.tiny import build_tokenizer
from tuneforge.data.formats import format_record, make_format_spec
from tuneforge.data.recipes.tools import SCHEMAS, load_schemas, main, tool_conversations
from tuneforge.data.render import render_conversation
from tuneforge.data.schema import Conversation, DataError
from tuneforge.data.synthetic.generate import HERE
from tuneforge.data.toolschema import argument_problem


def test_conversations_are_right_by_construction() -> None:
    tools = load_schemas(SCHEMAS)
    records = tool_conversations(tools, 200, seed=1)
    assert records == tool_conversations(tools, 200, seed=1)  # reproducible
    kinds = {"single": 0, "parallel": 0, "irrelevant": 0}
    for r in records:
        offered = [t["function"] for t in r["tools"]]
        assert all(not k.startswith("x-") for t in offered for k in t)  # the recipe's own keys are not shown
        calls = r["messages"][1].get("tool_calls") or []
        kinds["irrelevant" if not calls else "parallel" if len(calls) > 1 else "single"] += 1
        for call in calls:
            args = json.loads(call["function"]["arguments"])
            assert argument_problem(call["function"]["name"], args, offered) is None
            for value in args.values():  # every value called was asked for
                said = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                assert said in r["messages"][0]["content"], (said, r["messages"][0]["content"])
        if calls:
            assert [m["role"] for m in r["messages"][2:]] == ["tool"] * len(calls) + ["assistant"]
    assert kinds["single"] > 80 and kinds["parallel"] > 15 and kinds["irrelevant"] > 40


def test_write_registers_a_dataset_that_trains(tmp_path: Path) -> None:
    assert main([str(SCHEMAS), "--out", str(tmp_path), "--name", "acme", "--n", "30"]) == 0
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["acme_tools"] == {"file_name": "acme_tools.jsonl", "formatting": "openai"}
    tok = build_tokenizer("qwen25")
    for i, line in enumerate((tmp_path / "acme_tools.jsonl").read_text().splitlines(), start=1):
        sample = format_record("openai", json.loads(line), make_format_spec("openai"), f"acme_tools.jsonl:{i}")
        assert isinstance(sample, Conversation) and render_conversation(tok, sample, 100_000) is not None


def test_bad_schema_files(tmp_path: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps([{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "text"}}}}]))
    with pytest.raises(DataError, match=r"s\.json: tool 0 \(f\): parameters are not a valid JSON Schema"):
        load_schemas(bad)
    bad.write_text(json.dumps({"tools": [{"name": "f"}, {"name": "f"}]}))
    with pytest.raises(DataError, match="tool names repeat: \\['f'\\]"):
        load_schemas(bad)
    assert main([str(bad), "--out", str(tmp_path), "--name", "x"]) == 2


def test_the_shipped_tool_set_is_registered_and_disjoint_from_bfcl() -> None:
    info = json.loads((HERE / "dataset_info.json").read_text())
    assert info["tool_calls"] == {"file_name": "tool_calls.json", "formatting": "openai"}
    shipped = {f["name"] for f in load_schemas(SCHEMAS)}
    bfcl = sorted((SHARED_DATA / "bfcl").glob("BFCL_v4_*.json"))
    if not bfcl:
        pytest.skip("BFCL not in ../shared/data/bfcl")
    names = {fn["name"] for f in bfcl for line in f.read_text().splitlines() for fn in json.loads(line)["function"]}
    assert not shipped & names


def test_the_shipped_tool_calls_build_for_sft() -> None:
    from tuneforge.config import DataConfig
    from tuneforge.data.build import build_sft

    data = build_sft(
        DataConfig.model_validate({"datasets": [{"name": "tool_calls"}], "cutoff_len": 4096}), build_tokenizer("chatml")
    )
    assert len(data.train) == 300 and data.stats["tool_format"] == "hermes"
    assert data.stats["datasets"]["tool_calls"]["skipped"] == {}
