"""FORMATS: each layout -> Conversation/Text, LLaMA-Factory column and tag semantics, and their errors;
every format read from every file type that can hold it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.data.formats import FORMATS, format_record, make_format_spec
from tuneforge.data.schema import Conversation, DataError, Message, Text
from tuneforge.data.sources import read_records
from tuneforge.data.toolcalls import ToolCall, parse_calls

S, U, A, T = "system", "user", "assistant", "tool"


def conv(*pairs: tuple[str, str], tools: str | None = None, source: str = "f:1") -> Conversation:
    return Conversation(tuple(Message(r, c) for r, c in pairs), tools, source)  # type: ignore[arg-type]


def fmt(name: str, record: dict[str, Any], **spec: Any) -> Any:
    return format_record(name, record, make_format_spec(name, **spec), "f:1")


def test_formats_table_is_explicit() -> None:
    assert list(FORMATS) == [
        *("alpaca", "sharegpt", "openai", "text", "preference"),
        *("glaive", "xlam", "toolbench", "lf_v1"),
        "tallrec",
        "classification",
    ]


# ---- alpaca --------------------------------------------------------------------------------------------


def test_alpaca_joins_instruction_and_input_with_a_newline() -> None:
    got = fmt("alpaca", {"instruction": "Translate:", "input": "hello", "output": "bonjour"})
    assert got == conv((U, "Translate:\nhello"), (A, "bonjour"))


def test_alpaca_without_input_and_with_empty_input() -> None:
    assert fmt("alpaca", {"instruction": "Hi", "output": "Yo"}) == conv((U, "Hi"), (A, "Yo"))
    assert fmt("alpaca", {"instruction": "Hi", "input": "", "output": "Yo"}) == conv((U, "Hi"), (A, "Yo"))


def test_alpaca_history_system_and_tools_columns() -> None:
    record = {
        "q": "and 3+3?",
        "a": "6",
        "sys": "Be brief.",
        "hist": [["1+1?", "2"], ["2+2?", "4"]],
        "fns": [{"name": "add", "parameters": {}}],
    }
    columns = {"prompt": "q", "response": "a", "system": "sys", "history": "hist", "tools": "fns"}
    got = fmt("alpaca", record, columns=columns)
    expected = ((S, "Be brief."), (U, "1+1?"), (A, "2"), (U, "2+2?"), (A, "4"), (U, "and 3+3?"), (A, "6"))
    assert got == conv(*expected, tools='[{"name": "add", "parameters": {}}]')


def test_alpaca_ignores_a_system_field_unless_mapped_as_llama_factory_does() -> None:
    record = {"instruction": "Hi", "output": "Yo", "system": "S"}
    assert fmt("alpaca", record) == conv((U, "Hi"), (A, "Yo"))
    assert fmt("alpaca", record, columns={"system": "system"}) == conv((S, "S"), (U, "Hi"), (A, "Yo"))


def test_default_system_prompt_applies_only_when_the_sample_has_none() -> None:
    assert fmt("alpaca", {"instruction": "Hi", "output": "Yo"}, system="D") == conv((S, "D"), (U, "Hi"), (A, "Yo"))
    record = {"instruction": "Hi", "output": "Yo", "system": "Own"}
    got = fmt("alpaca", record, columns={"system": "system"}, system="D")
    assert got == conv((S, "Own"), (U, "Hi"), (A, "Yo"))


def test_missing_column_names_source_column_and_the_columns_present() -> None:
    with pytest.raises(DataError) as e:
        format_record("alpaca", {"question": "q", "answer": "a"}, make_format_spec("alpaca"), "data.jsonl:7")
    assert str(e.value) == (
        "data.jsonl:7: missing column 'instruction' (the 'prompt' field); this record has columns: 'question', 'answer'"
    )


def test_missing_column_hints_at_the_format_the_record_looks_like() -> None:
    with pytest.raises(DataError, match=r"missing column 'output'.*it looks like 'sharegpt' data"):
        fmt("alpaca", {"instruction": "x", "conversations": []})


def test_non_text_value_is_an_error() -> None:
    with pytest.raises(DataError, match=r"^f:1: column 'output' must be text, got NoneType: None"):
        fmt("alpaca", {"instruction": "x", "output": None})


def test_bad_history_pair() -> None:
    with pytest.raises(DataError, match=r"column 'h' item 0 must be a \[user, assistant\] pair"):
        fmt("alpaca", {"instruction": "x", "output": "y", "h": [["only one"]]}, columns={"history": "h"})


def test_unknown_column_field_is_an_error_listing_allowed_ones() -> None:
    with pytest.raises(DataError) as e:
        make_format_spec("alpaca", columns={"respnse": "out"})
    assert str(e.value) == (
        "columns 'respnse' not used by format 'alpaca'; "
        "allowed: prompt, query, response, history, system, tools, chosen, rejected"
    )


def test_tags_are_refused_for_formats_without_messages() -> None:
    with pytest.raises(DataError, match="tags 'role_tag' not used by format 'alpaca'; allowed: none"):
        make_format_spec("alpaca", tags={"role_tag": "r"})


def test_unknown_format_lists_formats() -> None:
    known = "alpaca, sharegpt, openai, text, preference, glaive, xlam, toolbench, lf_v1, tallrec, classification"
    with pytest.raises(DataError, match=rf"^unknown format 'chatml'; known formats: {known}$"):
        make_format_spec("chatml")


def test_tools_column_with_invalid_json() -> None:
    with pytest.raises(DataError, match=r"^f:1: column 'tools' is not valid JSON"):
        fmt("alpaca", {"instruction": "x", "output": "y", "tools": "[{"}, columns={"tools": "tools"})


# ---- sharegpt ------------------------------------------------------------------------------------------

GLAIVE_LIKE = {
    "conversations": [
        {"from": "human", "value": "Find a recipe with rice."},
        {"from": "function_call", "value": '{"name": "search", "arguments": {"q": "rice"}}'},
        {"from": "observation", "value": '{"recipes": ["fried rice"]}'},
        {"from": "gpt", "value": "Try fried rice."},
    ],
    "tools": '[{"name": "search", "description": "find recipes", "parameters": {}}]',
}


def test_sharegpt_function_call_and_observation() -> None:
    got = fmt("sharegpt", GLAIVE_LIKE, columns={"tools": "tools"})
    assert got == conv(
        (U, "Find a recipe with rice."),
        (A, '<tool_call>\n{"name": "search", "arguments": {"q": "rice"}}\n</tool_call>'),
        (T, '{"recipes": ["fried rice"]}'),
        (A, "Try fried rice."),
        tools=GLAIVE_LIKE["tools"],
    )


def test_sharegpt_tools_column_is_off_by_default_as_in_llama_factory() -> None:
    assert fmt("sharegpt", GLAIVE_LIKE).tools is None


def test_sharegpt_leading_system_turn_overrides_system_column() -> None:
    record = {
        "conversations": [
            {"from": "system", "value": "From turn."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Yo"},
        ],
        "system": "From column.",
    }
    assert fmt("sharegpt", record, columns={"system": "system"}) == conv((S, "From turn."), (U, "Hi"), (A, "Yo"))


def test_sharegpt_remapped_columns_and_tags() -> None:
    record = {"msgs": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "sys": "S"}
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    got = fmt("sharegpt", record, columns={"messages": "msgs", "system": "sys"}, tags=tags)
    assert got == conv((S, "S"), (U, "Hi"), (A, "Yo"))


def test_sharegpt_function_call_given_as_an_object_becomes_the_tool_call_text() -> None:
    record = {
        "conversations": [
            {"from": "human", "value": "Add 1 and 2"},
            {"from": "function_call", "value": {"name": "add", "arguments": {"a": 1, "b": 2}}},
        ]
    }
    said = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    assert fmt("sharegpt", record).messages[1] == Message(A, said)


def test_sharegpt_parallel_function_calls_become_one_block_each() -> None:
    calls = [{"name": "a", "arguments": {}}, {"name": "b", "arguments": '{"x": 1}'}]
    record = {
        "conversations": [{"from": "human", "value": "go"}, {"from": "function_call", "value": json.dumps(calls)}]
    }
    assert parse_calls(fmt("sharegpt", record).messages[1].content) == ("", [ToolCall("a"), ToolCall("b", {"x": 1})])


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("search for rice", r"conversations\[1\]\.value is not a JSON tool call"),
        ('{"arguments": {}}', r"conversations\[1\]\.value must be an object with a 'name'"),
        ('{"name": "f", "arguments": "{x"}', r"conversations\[1\]\.value\.arguments is not valid JSON"),
        ('[{"name": "f", "arguments": [1]}]', r"conversations\[1\]\.value\[0\]\.arguments must be a JSON object"),
    ],
)
def test_sharegpt_malformed_function_call_names_row_and_turn(value: str, why: str) -> None:
    record = {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": value}]}
    with pytest.raises(DataError, match=rf"^chats.json:row 3: {why}"):
        format_record("sharegpt", record, make_format_spec("sharegpt"), "chats.json:row 3")


def test_sharegpt_broken_alternation_names_source_and_turn() -> None:
    record = {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}
    with pytest.raises(DataError) as e:
        format_record("sharegpt", record, make_format_spec("sharegpt"), "chats.json:row 3")
    assert str(e.value) == (
        "chats.json:row 3: conversations[1] has from='human' where 'gpt' or 'function_call' is expected: "
        "turns must alternate user/observation, then assistant/function call"
    )


def test_sharegpt_must_end_with_the_assistant() -> None:
    record = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    record["conversations"].append({"from": "human", "value": "c"})
    with pytest.raises(DataError, match=r"conversations must end with an assistant \('gpt'\) turn; it has 3"):
        fmt("sharegpt", record)


def test_sharegpt_turn_without_content_key() -> None:
    record = {"conversations": [{"from": "human", "text": "a"}, {"from": "gpt", "value": "b"}]}
    with pytest.raises(DataError, match=r"conversations\[0\] has no 'value' key; it has: 'from', 'text'"):
        fmt("sharegpt", record)


# ---- openai --------------------------------------------------------------------------------------------


def test_openai_messages_with_text_parts_tool_calls_and_tool_role() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Oslo?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "content": "rain"},
            {"role": "assistant", "content": "It rains."},
        ],
        "tools": [{"type": "function", "function": {"name": "w"}}],
    }
    assert fmt("openai", record) == conv(
        (S, "Use tools."),
        (U, "Weather\nin Oslo?"),
        (A, '<tool_call>\n{"name": "w", "arguments": {}}\n</tool_call>'),
        (T, "rain"),
        (A, "It rains."),
        tools='[{"type": "function", "function": {"name": "w"}}]',
    )


def test_openai_parallel_tool_calls_follow_the_content() -> None:
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}},
        {"id": "c2", "type": "function", "function": {"name": "w", "arguments": {"city": "Rome"}}},
    ]
    record = {
        "messages": [
            {"role": "user", "content": "Both?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        ]
    }
    said = fmt("openai", record).messages[-1].content
    assert parse_calls(said) == ("Checking.", [ToolCall("w", {"city": "Oslo"}), ToolCall("w", {"city": "Rome"})])


def test_openai_malformed_tool_call_names_row_and_message() -> None:
    bad = [{"function": {"name": "w", "arguments": "not json"}}]
    record = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": bad}]}
    with pytest.raises(DataError, match=r"^calls.jsonl:row 7: messages\[1\]\.tool_calls\[0\]\.arguments is not valid"):
        format_record("openai", record, make_format_spec("openai"), "calls.jsonl:row 7")


def test_openai_unknown_role() -> None:
    record = {"messages": [{"role": "developer", "content": "x"}, {"role": "assistant", "content": "y"}]}
    with pytest.raises(DataError, match=r"messages\[0\] has unknown role 'developer'; allowed: system, user"):
        fmt("openai", record)


def test_openai_needs_an_assistant_message_after_a_user_one() -> None:
    with pytest.raises(DataError, match="has no assistant message"):
        fmt("openai", {"messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(DataError, match="starts with an assistant message"):
        fmt("openai", {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]})


def test_openai_image_parts_are_refused() -> None:
    content = [{"type": "image_url", "image_url": {"url": "x"}}]
    record = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "y"}]}
    with pytest.raises(DataError, match=r"messages\[0\]: only \{'type': 'text', 'text': ...\} parts are supported"):
        fmt("openai", record)


# ---- text ----------------------------------------------------------------------------------------------


def test_text_format_and_its_column() -> None:
    assert fmt("text", {"text": "a document"}) == Text("a document", "f:1")
    assert fmt("text", {"body": "doc"}, columns={"text": "body"}) == Text("doc", "f:1")
    with pytest.raises(DataError, match="missing column 'text'"):
        fmt("text", {"body": "doc"})


# ---- every format from every file type that can hold it ------------------------------------------------


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path.write_text("".join(r["text"] + "\n" for r in records), encoding="utf-8")
    return path


CASES = {
    "alpaca": (
        [{"instruction": "Add", "input": "1 2", "output": "3"}, {"instruction": "Hi", "input": "", "output": "Yo"}],
        [conv((U, "Add\n1 2"), (A, "3")), conv((U, "Hi"), (A, "Yo"))],
    ),
    "sharegpt": (
        [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}],
        [conv((U, "Hi"), (A, "Yo"))],
    ),
    "openai": (
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}],
        [conv((U, "Hi"), (A, "Yo"))],
    ),
    "text": ([{"text": "one doc"}, {"text": "two docs"}], [Text("one doc"), Text("two docs")]),
}
HOLDS = {
    "alpaca": ["json", "jsonl", "csv", "parquet"],
    "sharegpt": ["json", "jsonl", "parquet"],
    "openai": ["json", "jsonl", "parquet"],
    "text": ["json", "jsonl", "csv", "parquet", "txt"],
}


@pytest.mark.parametrize("name,ext", [(f, e) for f, exts in HOLDS.items() for e in exts])
def test_format_from_file_type(tmp_path: Path, name: str, ext: str) -> None:
    records, expected = CASES[name]
    path = write(tmp_path / f"data.{ext}", records)
    spec = make_format_spec(name)
    got = [format_record(name, r, spec, src) for src, r in read_records(path)]
    assert [g.source.startswith(f"{path}:") for g in got] == [True] * len(expected)
    assert [_without_source(g) for g in got] == [_without_source(e) for e in expected]


def _without_source(sample: Any) -> Any:
    return (sample.messages, sample.tools) if isinstance(sample, Conversation) else sample.text
