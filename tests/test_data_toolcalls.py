"""The tool-call text: render -> parse round trips, the readings eval and serve rely on, strict data reading."""

from __future__ import annotations

import pytest

from tuneforge.data.schema import DataError
from tuneforge.data.toolcalls import ToolCall, ToolCallError, calls_from_json, parse_calls, render_calls

WEATHER = ToolCall("get_weather", {"city": "Oslo", "days": 3})
ROME = ToolCall("get_weather", {"city": "Roma", "units": {"temp": "°C"}, "tags": ["a", "b"]})


def test_the_training_format_is_one_tagged_block_per_call() -> None:
    assert render_calls([WEATHER]) == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}\n</tool_call>'
    )
    assert render_calls([WEATHER, ROME]).count("<tool_call>") == 2
    assert render_calls([], "Just text.") == "Just text."


@pytest.mark.parametrize(
    ("content", "calls"),
    [
        ("", [WEATHER]),  # single
        ("", [WEATHER, ROME]),  # parallel
        ("Let me check both.", [WEATHER, ROME]),  # content before the calls
        ("No function fits, so I answer in words.", []),  # no call
    ],
)
def test_render_then_parse_round_trips(content: str, calls: list[ToolCall]) -> None:
    assert parse_calls(render_calls(calls, content)) == (content, calls)


def test_parse_reads_what_other_models_write() -> None:
    args = {"base": 10, "height": 5}
    area = ToolCall("area", args)
    assert parse_calls('{"name": "area", "arguments": {"base": 10, "height": 5}}') == ("", [area])
    assert parse_calls('Sure: [{"name": "area", "parameters": {"base": 10, "height": 5}}]') == ("Sure:", [area])
    openai = '{"type": "function", "function": {"name": "area", "arguments": "{\\"base\\": 10, \\"height\\": 5}"}}'
    assert parse_calls(openai) == ("", [area])
    assert parse_calls('Here:\n```json\n{"area": {"base": 10, "height": 5}}\n```') == ("Here:", [area])
    assert parse_calls("[area(base=10, height=5), math.sqrt(x=4)]") == ("", [area, ToolCall("math.sqrt", {"x": 4})])
    assert parse_calls('<tool_call>\n{"name": "area", "arguments": {"base": 10, "height": 5}}') == ("", [area])


def test_a_broken_block_stays_in_the_content() -> None:
    good = render_calls([WEATHER])
    broken = "<tool_call>\n{not json}\n</tool_call>"
    assert parse_calls(broken) == (broken, [])
    assert parse_calls(f"{broken}\n{good}") == (broken, [WEATHER])
    assert parse_calls("f(1) is positional, not a call") == ("f(1) is positional, not a call", [])
    assert parse_calls("nul\x00byte") == ("nul\x00byte", [])


def test_calls_from_json_is_strict_and_names_where() -> None:
    openai = [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert calls_from_json(openai, "x") == [ToolCall("get_weather", {"city": "Oslo"}, "c1")]
    assert calls_from_json('{"name": "f"}', "x") == [ToolCall("f")]
    assert issubclass(ToolCallError, DataError)
    with pytest.raises(ToolCallError, match=r"^messages\[2\]\.tool_calls\[1\] must be an object with a 'name'"):
        calls_from_json([{"name": "f"}, {"function": {"arguments": {}}}], "messages[2].tool_calls")
    with pytest.raises(ToolCallError, match="holds no tool call"):
        calls_from_json("[]", "value")
