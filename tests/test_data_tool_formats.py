"""The tool-use layouts (glaive, xlam, toolbench, lf_v1) on hand-written records, the shipped examples where
present, and bad input as DataErrors naming the file and row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA
from tests.tiny import build_tokenizer
from tuneforge.data.formats import format_record, make_format_spec
from tuneforge.data.render import render_conversation
from tuneforge.data.schema import Conversation, DataError, Message
from tuneforge.data.sources import read_records
from tuneforge.data.toolcalls import ToolCall, render_calls, split_tagged

WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def fmt(name: str, record: dict[str, Any], source: str = "tools.jsonl:3") -> Conversation:
    sample = format_record(name, record, make_format_spec(name), source)
    assert isinstance(sample, Conversation)
    return sample


def calls_of(sample: Conversation) -> list[list[ToolCall]]:
    return [split_tagged(m.content)[1] for m in sample.messages if m.role == "assistant"]


def test_glaive_text() -> None:
    record = {
        "system": "SYSTEM: You are a helpful assistant with access to the following functions. Use them if "
        "required -\n" + json.dumps(WEATHER, indent=4) + "\n",
        "chat": "USER: Weather in Oslo?\n\n\nASSISTANT: <functioncall> "
        '{"name": "get_weather", "arguments": \'{"city": "Oslo"}\'} <|endoftext|>\n\n\n'
        'FUNCTION RESPONSE: {"sky": "rain"}\n\n\nASSISTANT: It rains in Oslo. <|endoftext|>\n\n\nUSER: thanks\n',
    }
    s = fmt("glaive", record)
    assert [m.role for m in s.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert (
        s.messages[0].content
        == "You are a helpful assistant with access to the following functions. Use them if required"
    )
    assert calls_of(s) == [[ToolCall("get_weather", {"city": "Oslo"})], []]
    assert json.loads(s.tools or "") == [WEATHER] and s.messages[-1].content == "It rains in Oslo."
    plain = fmt(
        "glaive",
        {
            "system": "SYSTEM: You are a helpful assistant, with no access to external functions.",
            "chat": "USER: hi\nASSISTANT: Hello! <|endoftext|>",
        },
    )
    assert plain.tools is None and [m.content for m in plain.messages] == [
        "You are a helpful assistant, with no access to external functions.",
        "hi",
        "Hello!",
    ]


def test_xlam_query_tools_answers() -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {
                "city": {"type": "str", "description": "City"},
                "days": {"type": "int, optional", "default": 1},
            },
        }
    ]
    answers = [
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
        {"name": "get_weather", "arguments": {"city": "Roma", "days": 2}},
    ]
    s = fmt("xlam", {"query": "Weather in Oslo and Roma?", "tools": json.dumps(tools), "answers": json.dumps(answers)})
    assert calls_of(s) == [
        [ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_weather", {"city": "Roma", "days": 2})]
    ]
    params = json.loads(s.tools or "")[0]["parameters"]
    assert params == {
        "type": "object",
        "properties": {"city": {"description": "City", "type": "string"}, "days": {"default": 1, "type": "integer"}},
        "required": ["city"],
    }
    none = fmt("xlam", {"query": "Tell a joke", "tools": json.dumps(tools), "answers": "[]"})
    assert calls_of(none) == [[]] and "None of the available functions" in none.messages[-1].content


def toolbench_record() -> dict[str, Any]:
    system = {"role": "system", "content": "You are AutoGPT ..."}
    user = {"role": "user", "content": "Weather in Oslo?"}
    call = {
        "role": "assistant",
        "content": "I will look.",
        "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    result = {"role": "function", "name": "get_weather", "content": '{"sky": "rain"}'}
    finish = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "Finish", "arguments": '{"return_type": "give_answer", "final_answer": "Rain."}'},
    }
    finish_tool = {
        "name": "Finish",
        "description": "end",
        "parameters": {
            "type": "object",
            "properties": {"return_type": {"type": "string"}, "final_answer": {"type": "string"}},
        },
    }
    return {
        "answer_generation": {
            "valid_data": True,
            "function": [WEATHER, finish_tool],
            "train_messages": [[system, user, call], [system, user, call, result, finish]],
        }
    }


def test_toolbench_answer_trajectory() -> None:
    s = fmt("toolbench", toolbench_record())
    assert [m.role for m in s.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert [c[0].name for c in calls_of(s)] == ["get_weather", "Finish"]
    assert s.messages[2].content.startswith("I will look.\n<tool_call>")


TOOLBENCH = sorted((SHARED_DATA / "toolcalls" / "toolbench" / "data_example" / "answer").glob("G*_answer/*.json"))


@pytest.mark.skipif(not TOOLBENCH, reason="ToolBench examples not in ../shared/data/toolcalls/toolbench")
def test_toolbench_examples_read_in_place_and_render() -> None:
    tok, trained = build_tokenizer("chatml"), 0
    for path in TOOLBENCH:
        ((source, record),) = read_records(path)  # one answer object per file is one record (data.sources)
        assert source == f"{path}:row 1" and record == json.loads(path.read_text(encoding="utf-8"))
        if not record["answer_generation"].get("train_messages"):
            with pytest.raises(DataError, match=rf"^{path}: no answer_generation.train_messages"):
                fmt("toolbench", record, str(path))
            continue
        try:
            s = fmt("toolbench", record, str(path))
        except DataError as e:  # ChatGPT's trajectories sometimes call a tool that does not exist: refused
            assert str(e).startswith(f"{path}: message ") and "which the sample's tools do not offer" in str(e)
            continue
        assert calls_of(s) and all(c for c in calls_of(s)[-1])
        r = render_conversation(tok, s, 100_000)
        assert r is not None and "<tools>" in tok.decode(r.input_ids)
        trained += 1
    assert trained >= 8


def test_lf_v1_parts_and_loss_weight() -> None:
    record = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "value": "Be careful."}]},
            {"role": "user", "content": [{"type": "text", "value": "hi"}], "loss_weight": 0.0},
            {"role": "assistant", "content": [{"type": "text", "value": "Hello."}], "loss_weight": 0.0},
            {"role": "user", "content": [{"type": "text", "value": "Weather in Oslo?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "reasoning", "value": "Need the tool."},
                    {"type": "tool_call", "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
                ],
            },
            {"role": "tool", "content": [{"type": "text", "value": '{"sky": "rain"}'}]},
            {"role": "assistant", "content": [{"type": "text", "value": "It rains."}], "loss_weight": 1.0},
        ],
        "tools": json.dumps([{"type": "function", "function": WEATHER}]),
    }
    s = fmt("lf_v1", record)
    assert [m.trained for m in s.messages if m.role == "assistant"] == [False, True, True]
    assert s.messages[4].content == "<think>\nNeed the tool.\n</think>\n" + render_calls(
        [ToolCall("get_weather", {"city": "Oslo"})]
    )
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "loss_weight": 0.5}]}
    with pytest.raises(DataError, match=r"^tools.jsonl:3: messages\[1\].loss_weight=0.5: only 0 .* or 1"):
        fmt("lf_v1", bad)


LF_FILES = sorted(Path("/tmp/lf").glob("llamafactory-*/data/reason_tool_use_demo_50.jsonl")) + sorted(
    Path("/tmp/lf").glob("llamafactory-*/data/v1_sft_demo.jsonl")
)


@pytest.mark.skipif(not LF_FILES, reason="LLaMA-Factory sdist not unpacked under /tmp/lf")
def test_lf_v1_demo_files() -> None:
    tok = build_tokenizer("qwen25")
    for path in LF_FILES:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for i, row in enumerate(rows, start=1):
            s = fmt("lf_v1", row, f"{path}:{i}")
            assert render_conversation(tok, s, 100_000) is not None
    called = [c for row in rows for c in calls_of(fmt("lf_v1", row))]
    assert any(called) or "v1_sft" in str(path)


def openai(messages: list[dict[str, Any]], tools: Any = (WEATHER,)) -> dict[str, Any]:
    return {"messages": messages, "tools": list(tools)}


USER = {"role": "user", "content": "Weather in Oslo?"}


def call(name: str) -> dict[str, Any]:
    return {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": "{}"}}]}


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (
            openai(
                [USER, {"role": "assistant", "content": "x"}],
                [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "strng"}}}}],
            ),
            r"tools\[0\] \(f\): parameters are not a valid JSON Schema: property 'a' has unknown type 'strng'",
        ),
        (
            openai(
                [USER, {"role": "assistant", "content": "x"}],
                [{"name": "f", "parameters": {"type": "object", "properties": {}, "required": ["a"]}}],
            ),
            r"tools\[0\] \(f\): parameters are not a valid JSON Schema: 'required' names 'a', which are not in",
        ),
        (
            openai(
                [USER, call("get_wether"), {"role": "tool", "content": "{}"}, {"role": "assistant", "content": "x"}]
            ),
            r"message 1 calls 'get_wether', which the sample's tools do not offer \(offered: get_weather\)",
        ),
        (
            openai([USER, {"role": "tool", "content": "{}"}, {"role": "assistant", "content": "x"}]),
            r"message 1 is a tool result with no tool call before it",
        ),
    ],
    ids=["bad-type", "bad-required", "unknown-tool", "result-without-call"],
)
def test_bad_tool_data_is_a_data_error_naming_file_and_row(record: dict[str, Any], error: str) -> None:
    with pytest.raises(DataError, match=rf"^tools\.jsonl:3: {error}"):
        fmt("openai", record)


def test_glaive_and_sharegpt_bad_input() -> None:
    with pytest.raises(DataError, match=r"^g.json:row 2: a function in the system text is not valid JSON"):
        format_record(
            "glaive",
            {"system": "SYSTEM: x - {oops", "chat": "USER: a\nASSISTANT: b"},
            make_format_spec("glaive"),
            "g.json:row 2",
        )
    sharegpt = {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "function_call", "value": '{"name": "nope", "arguments": {}}'},
            {"from": "observation", "value": "{}"},
            {"from": "gpt", "value": "ok"},
        ],
        "tools": json.dumps([WEATHER]),
    }
    spec = make_format_spec("sharegpt", columns={"tools": "tools"})
    with pytest.raises(DataError, match=r"^s.json:row 1: message 1 calls 'nope'"):
        format_record("sharegpt", sharegpt, spec, "s.json:row 1")
    assert Message("user", "x").trained


def test_loss_weight_zero_survives_the_build(tmp_path: Path) -> None:
    from tuneforge.config import DataConfig
    from tuneforge.data.build import build_sft

    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "hi {{name}}"}]},
            {"role": "assistant", "content": [{"type": "text", "value": "Hello."}], "loss_weight": 0.0},
            {"role": "user", "content": [{"type": "text", "value": "bye"}]},
            {"role": "assistant", "content": [{"type": "text", "value": "Bye."}], "loss_weight": 1.0},
        ]
    }
    path = tmp_path / "v1.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    cfg = DataConfig.model_validate({"datasets": [{"path": str(path), "format": "lf_v1"}], "variables": {"name": "X"}})
    tok = build_tokenizer("chatml")
    data = build_sft(cfg, tok)
    labels = [t for t in data.train[0]["labels"] if t != -100]
    assert tok.decode(labels) == "Bye.<|im_end|>"
