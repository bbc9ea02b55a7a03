"""Serving tools: tool_choice, validated calls (broken or off-schema ones come back as content), the forced call
opening, tool results fed back, streamed tool-call deltas as OpenAI sends them, the run's tool format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.tiny import build_tokenizer
from tuneforge.config import ModelConfig
from tuneforge.data.schema import DataError
from tuneforge.data.toolcalls import ToolCall, render_calls
from tuneforge.inference import LocalEngine
from tuneforge.runs import RunDir
from tuneforge.serve.app import Generator, create_app
from tuneforge.serve.protocol import ChatCompletionRequest
from tuneforge.serve.tools import ToolPlan, ToolStream, plan_tools, read_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
USER = [{"role": "user", "content": "Weather in Oslo?"}]
OSLO = render_calls([ToolCall("get_weather", {"city": "Oslo"})])


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path) -> TestClient:
    engine = LocalEngine(ModelConfig(path=str(tiny_model_dir)))
    engine.model.config.max_position_embeddings = 2048  # the hermes tool text is long in the tiny vocabulary
    return TestClient(create_app({"tiny": engine}, max_tokens_limit=32))


def request(**kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="tiny", messages=USER, **kw)


def answer_with(monkeypatch: pytest.MonkeyPatch, said: str) -> list[list[int]]:
    prompts: list[list[int]] = []

    def run(self: Any, engine: Any, ids: list[int], req: Any, max_new: int) -> tuple[str, int, str]:
        prompts.append(ids)
        return said, 5, "stop"

    monkeypatch.setattr(Generator, "run", run)
    return prompts


def post(client: TestClient, **kw: Any) -> Any:
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": USER, "max_tokens": 8, **kw})
    return r


def test_tool_choice_plans() -> None:
    tok = build_tokenizer("chatml")
    assert plan_tools(request(), tok, "auto") == ToolPlan()
    assert plan_tools(request(tools=[WEATHER], tool_choice="none"), tok, "auto") == ToolPlan()
    auto = plan_tools(request(tools=[WEATHER, TIME]), tok, "auto")
    assert auto.choice == "auto" and auto.opening == "" and len(auto.tools or []) == 2
    required = plan_tools(request(tools=[WEATHER, TIME], tool_choice="required"), tok, "auto")
    assert required.opening == '<tool_call>\n{"name": "'
    named = plan_tools(
        request(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}}), tok, "auto"
    )
    assert named.tools == [TIME] and named.opening == '<tool_call>\n{"name": "get_time'
    llama = plan_tools(request(tools=[WEATHER], tool_choice="required"), build_tokenizer("llama31"), "auto")
    assert llama.opening == '{"name": "'  # the native call format's own opening
    with pytest.raises(DataError, match="tool_choice names 'nope', which is not among the tools"):
        plan_tools(
            request(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), tok, "auto"
        )
    with pytest.raises(DataError, match="tool_choice must be"):
        plan_tools(request(tools=[WEATHER], tool_choice="always"), tok, "auto")
    with pytest.raises(DataError, match="tool_choice 'required' needs tools"):
        plan_tools(request(tool_choice="required"), tok, "auto")


@pytest.mark.parametrize(
    "said",
    [
        render_calls([ToolCall("get_weather", {"town": "Oslo"})]),  # an argument the schema does not have
        render_calls([ToolCall("get_weather", {"city": 3})]),  # wrong type
        render_calls([ToolCall("get_wether", {"city": "Oslo"})]),  # a tool not offered
        "<tool_call>\n{not json}\n</tool_call>",
    ],
    ids=["unknown-arg", "wrong-type", "unknown-tool", "not-json"],
)
def test_a_call_that_does_not_fit_comes_back_as_content(client: TestClient, monkeypatch, said: str) -> None:
    answer_with(monkeypatch, said)
    choice = post(client, tools=[WEATHER]).json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == said
    assert choice["message"].get("tool_calls") is None


def test_required_prompts_and_forces_the_call_opening(client: TestClient, monkeypatch) -> None:
    prompts = answer_with(monkeypatch, 'get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    r = post(client, tools=[WEATHER, TIME], tool_choice="required")
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    prompt = build_tokenizer("chatml").decode(prompts[0])
    assert "Answer with a function call." in prompt and "<tools>" in prompt
    assert prompt.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "')
    answer_with(monkeypatch, 'get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    named = post(client, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.json()["choices"][0]["finish_reason"] == "stop"  # it had to call get_time: returned as content


def test_tool_results_are_fed_back(client: TestClient, monkeypatch) -> None:
    prompts = answer_with(monkeypatch, "It is sunny in Oslo.")
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    history = [
        *USER,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    choice = post(client, messages=history, tools=[WEATHER]).json()["choices"][0]
    assert choice["message"]["content"] == "It is sunny in Oslo." and choice["finish_reason"] == "stop"
    prompt = build_tokenizer("chatml").decode(prompts[0])
    assert OSLO in prompt and "<|im_start|>tool\nsunny<|im_end|>" in prompt


def events(client: TestClient, monkeypatch, pieces: list[str], **kw: Any) -> list[dict[str, Any]]:
    monkeypatch.setattr(Generator, "stream", lambda self, engine, ids, req, max_new: iter(pieces))
    r = post(client, stream=True, **kw)
    lines = [line[6:] for line in r.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    return [json.loads(line)["choices"][0] for line in lines]


def test_streamed_tool_call_deltas(client: TestClient, monkeypatch) -> None:
    said = "Let me check.\n" + OSLO
    pieces = [said[i : i + 7] for i in range(0, len(said), 7)]
    got = events(client, monkeypatch, pieces, tools=[WEATHER])
    content = "".join(c["delta"].get("content") or "" for c in got)
    assert content == "Let me check."  # nothing of the call leaks into content
    calls = [c["delta"]["tool_calls"][0] for c in got if c["delta"].get("tool_calls")]
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""} and calls[0]["index"] == 0
    assert json.loads(calls[1]["function"]["arguments"]) == {"city": "Oslo"} and "id" not in calls[1]
    assert got[-1]["finish_reason"] == "tool_calls"


def test_a_streamed_broken_call_arrives_as_content(client: TestClient, monkeypatch) -> None:
    said = 'Here: {"name": "get_weather", "arguments": {"city": 5}}'
    got = events(client, monkeypatch, [said[:10], said[10:]], tools=[WEATHER])
    assert "".join(c["delta"].get("content") or "" for c in got) == said
    assert got[-1]["finish_reason"] == "stop" and not any(c["delta"].get("tool_calls") for c in got)
    plain = events(client, monkeypatch, ["Hello ", "there."])
    assert "".join(c["delta"].get("content") or "" for c in plain) == "Hello there."


def test_read_calls_and_the_stream_agree() -> None:
    plan = ToolPlan([WEATHER], "auto")
    assert read_calls(OSLO, plan) == (None, [ToolCall("get_weather", {"city": "Oslo"})])
    stream = ToolStream(plan)
    out = [d for p in ("<tool_", "call>\n", OSLO[11:]) for d in stream.feed(p)] + list(stream.close())
    assert [d for d in out if "content" in d] == [] and stream.calls == [ToolCall("get_weather", {"city": "Oslo"})]


def test_the_run_records_its_tool_format(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("data:\n  tool_format: hermes\n", encoding="utf-8")
    assert RunDir(tmp_path).tool_format() == "hermes"
    (tmp_path / "data_stats.json").write_text(json.dumps({"tool_format": "native"}), encoding="utf-8")
    assert RunDir(tmp_path).tool_format() == "native"
    assert RunDir(tmp_path / "missing").tool_format() == "auto"
