"""Tools in every prompt: each template family (native Qwen2.5 / Llama-3.1 layouts, and the hermes fallback on
templates that ignore tools) shows the schemas, and calls round-trip render -> parse for single, parallel and
no-call turns."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.tiny import build_tokenizer
from tuneforge.data.render import (
    IGNORE_INDEX,
    render_conversation,
    render_prompt,
    resolved_tool_format,
    template_tool_support,
    tool_rendering,
)
from tuneforge.data.schema import Conversation, DataError, Message
from tuneforge.data.toolcalls import ToolCall, parse_calls, render_calls

WEATHER = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {
    "name": "get_time",
    "description": "Local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS = json.dumps([WEATHER, TIME])
OSLO, ROMA = ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_time", {"city": "Roma"})


def conv(*calls: ToolCall, answer: str = "It rains.") -> Conversation:
    turns = [Message("user", "Weather in Oslo?")]
    if calls:
        turns += [Message("assistant", render_calls(list(calls))), *[Message("tool", '{"ok": 1}') for _ in calls]]
    turns.append(Message("assistant", answer))
    return Conversation(tuple(turns), TOOLS, "t.jsonl:1")


def labelled(tok: Any, ids: list[int], labels: list[int]) -> list[str]:
    spans, cur = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab == IGNORE_INDEX:
            if cur:
                spans.append(tok.decode(cur))
            cur = []
        else:
            cur.append(i)
    return [*spans, tok.decode(cur)] if cur else spans


@pytest.mark.parametrize(
    ("template", "tools", "calls", "parallel"),
    [
        ("chatml", False, False, False),  # SmolLM2's template: ignores tools
        ("llama3", False, False, False),
        ("qwen25", True, True, True),
        ("llama31", True, True, False),  # one call per turn
    ],
)
def test_the_probe_finds_what_each_template_renders(template: str, tools: bool, calls: bool, parallel: bool) -> None:
    got = template_tool_support(build_tokenizer(template))
    assert (got.tools, got.calls, got.parallel) == (tools, calls, parallel)


@pytest.mark.parametrize("template", ["chatml", "llama3", "qwen25", "llama31"])
def test_the_schemas_are_in_the_prompt_of_every_template(template: str) -> None:
    tok = build_tokenizer(template)
    text = tok.decode(render_prompt(tok, [Message("user", "Weather in Oslo?")], TOOLS))
    assert '"name": "get_weather"' in text and "Current weather of a city" in text and '"get_time"' in text
    native = template in ("qwen25", "llama31")
    assert ("If none of the functions fits" in text) is not native  # the fallback's words only where needed


@pytest.mark.parametrize("template", ["chatml", "llama3", "qwen25", "llama31"])
@pytest.mark.parametrize("calls", [(OSLO,), (OSLO, ROMA), ()], ids=["single", "parallel", "none"])
def test_trained_calls_parse_back(template: str, calls: tuple[ToolCall, ...]) -> None:
    tok = build_tokenizer(template)
    sample = conv(*calls)
    if template == "llama31" and len(calls) > 1:
        with pytest.raises(
            DataError, match=r"^t\.jsonl:1: an assistant turn makes 2 parallel calls.*tool_format=hermes"
        ):
            render_conversation(tok, sample, 4096)
        r = render_conversation(tok, sample, 4096, tool_format="hermes")
    else:
        r = render_conversation(tok, sample, 4096)
    assert r is not None
    spans = labelled(tok, r.input_ids, r.labels)
    assert len(spans) == (2 if calls else 1)
    if calls:
        assert parse_calls(spans[0])[1] == list(calls)  # what the model learns to say is what serve/eval read
    assert not parse_calls(spans[-1])[1]  # the final answer is words


def test_training_and_prompt_render_the_same_tokens() -> None:
    for template in ("chatml", "qwen25", "llama31"):
        tok = build_tokenizer(template)
        sample = conv(OSLO)
        r = render_conversation(tok, sample, 4096)
        assert r is not None
        prompt = render_prompt(tok, sample.messages[:1], sample.tools)
        assert r.input_ids[: len(prompt)] == prompt
        later = render_prompt(tok, sample.messages[:3], sample.tools)
        assert r.input_ids[: len(later)] == later


def test_hermes_on_a_native_template_and_native_where_impossible() -> None:
    qwen = build_tokenizer("qwen25")
    text = qwen.decode(render_prompt(qwen, [Message("user", "hi")], TOOLS, tool_format="hermes"))
    assert "If none of the functions fits" in text  # the fallback's system text, not the template's
    with pytest.raises(DataError, match=r"data\.tool_format=native, but the chat template .* does not render tools"):
        tool_rendering(build_tokenizer("chatml"), "native")
    assert resolved_tool_format(build_tokenizer("chatml")) == "hermes"
    assert resolved_tool_format(qwen) == "native" and resolved_tool_format(qwen, "hermes") == "hermes"


def test_the_fallback_keeps_the_system_prompt_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    tok = build_tokenizer("chatml")
    tok.chat_template = tok.chat_template + "{# a fresh template text, so the warning is new #}"
    with caplog.at_level(logging.WARNING, logger="tuneforge.data"):
        for _ in range(3):
            text = tok.decode(render_prompt(tok, [Message("system", "Be brief."), Message("user", "hi")], TOOLS))
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert sum("ignores `tools`" in r.message for r in caplog.records) == 1


def test_more_tools_than_max_tools_keep_the_best_and_the_called() -> None:
    many = [{"name": f"tool_{i}", "description": f"does thing {i}", "parameters": {}} for i in range(20)]
    tools = json.dumps([*many, WEATHER, TIME])
    tok = build_tokenizer("chatml")
    text = tok.decode(render_prompt(tok, [Message("user", "What is the weather in Oslo?")], tools, max_tools=2))
    assert '"get_weather"' in text and "tool_7" not in text
    sample = Conversation(conv(ROMA).messages, tools, "t:1")  # the sample calls get_time: it stays
    r = render_conversation(tok, sample, 4096, max_tools=1)
    assert r is not None and '"get_time"' in tok.decode(r.input_ids) and "tool_3" not in tok.decode(r.input_ids)


def test_an_assistant_turn_with_loss_weight_zero_is_not_trained() -> None:
    tok = build_tokenizer("chatml")
    msgs = (
        Message("user", "hi"),
        Message("assistant", "Hello.", trained=False),
        Message("user", "bye"),
        Message("assistant", "Bye."),
    )
    r = render_conversation(tok, Conversation(msgs, None, "t:1"), 1024)
    assert r is not None and labelled(tok, r.input_ids, r.labels) == ["Bye.<|im_end|>"]


def test_native_calls_only_where_they_parse_back() -> None:
    tok = build_tokenizer("chatml")
    own_markup = (  # calls in a markup of its own: the model would learn text serve and eval cannot read back
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% for c in m.tool_calls or [] %}<tools>{{ c.function.name }}({{ c.function.arguments | tojson }})</tools>"
        "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok.chat_template = own_markup
    got = template_tool_support(tok)
    assert not got.calls and not got.parallel
    r = render_conversation(tok, conv(OSLO), 4096)
    assert r is not None and parse_calls(labelled(tok, r.input_ids, r.labels)[0])[1] == [OSLO]  # hermes calls
