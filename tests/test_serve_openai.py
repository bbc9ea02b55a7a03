"""The official `openai` client against a live uvicorn server on 127.0.0.1 (a random free port, in a thread)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving import served
from tuneforge.config import ModelConfig
from tuneforge.data.toolcalls import ToolCall, render_calls
from tuneforge.inference import LocalEngine
from tuneforge.serve.app import Generator, create_app

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def base_url(tiny_model_dir: Path) -> Iterator[str]:
    app = create_app({"tiny": LocalEngine(ModelConfig(path=str(tiny_model_dir)))}, api_key="k", max_tokens_limit=64)
    with served(app) as url:
        yield url


def test_openai_client_end_to_end(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]

    msgs = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert streamed == reply.choices[0].message.content

    done = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert done.choices[0].text

    with pytest.raises(openai.BadRequestError, match="limit of 64"):
        client.chat.completions.create(model="tiny", messages=msgs, max_tokens=65)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()


def test_two_concurrent_live_requests_are_both_answered(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)

    def ask(i: int) -> str:
        msgs = [{"role": "user", "content": f"question {i}"}]
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
        return r.choices[0].finish_reason

    with ThreadPoolExecutor(2) as pool:
        assert all(f in ("stop", "length") for f in pool.map(ask, range(2)))


def test_openai_client_receives_the_trained_call_format_as_tool_calls(base_url: str, monkeypatch) -> None:
    said = render_calls([ToolCall("get_weather", {"city": "Oslo"})])
    monkeypatch.setattr(Generator, "run", lambda self, engine, ids, req, max_new: (said, 7, "stop"))
    client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "Weather in Oslo?"}]
    reply = client.chat.completions.create(model="tiny", messages=msgs, tools=tools, max_tokens=8)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Oslo"}'


def test_openai_client_streams_tool_call_deltas(base_url: str, monkeypatch) -> None:
    said = "Checking.\n" + render_calls([ToolCall("get_weather", {"city": "Oslo"})])
    monkeypatch.setattr(
        Generator, "stream", lambda self, engine, ids, req, max_new: iter([said[:9], said[9:30], said[30:]])
    )
    client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "Weather in Oslo?"}]
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(model="tiny", messages=msgs, tools=tools, max_tokens=8, stream=True):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:  # how client code assembles them
            entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            entry["name"] += (tc.function.name or "") if tc.function else ""
            entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert content == "Checking." and finish == "tool_calls"
    assert calls == {0: {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
