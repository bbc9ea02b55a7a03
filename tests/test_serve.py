from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.config import ModelConfig
from tuneforge.data.formats import format_record, make_format_spec
from tuneforge.data.toolcalls import parse_calls
from tuneforge.inference import LocalEngine
from tuneforge.serve.app import Generator, ServeError, check_bind, create_app, load_engines, to_messages
from tuneforge.serve.protocol import ChatMessage, OpenAIToolCall


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random (non-zero) LoRA adapter, so the adapter model answers differently from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def engines(tiny_model_dir: Path, adapter_dir: Path) -> dict[str, LocalEngine]:
    base = ModelConfig(path=str(tiny_model_dir))
    return {"tiny": LocalEngine(base), "tiny-lora": LocalEngine(base, adapter_dir)}


@pytest.fixture(scope="module")
def client(engines) -> TestClient:
    return TestClient(create_app(engines, max_tokens_limit=32, max_request_bytes=4000))


def chat(client: TestClient, **kw) -> dict:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0}
    r = client.post("/v1/chat/completions", json={**body, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_models_lists_every_model_name(client: TestClient) -> None:
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tiny", "tiny-lora"]


def test_chat_non_stream_and_adapter_selection(client: TestClient) -> None:
    out = chat(client)
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert 0 < out["usage"]["completion_tokens"] <= 5
    # greedy is deterministic; the random adapter changes the answer's logits, and the name picks the engine
    assert chat(client)["choices"][0]["message"]["content"] == out["choices"][0]["message"]["content"]
    lora = chat(client, model="tiny-lora")
    assert lora["model"] == "tiny-lora"


def test_seeded_sampling_repeats(client: TestClient) -> None:
    a = chat(client, temperature=1.0, top_p=0.9, seed=7, max_tokens=8)
    b = chat(client, temperature=1.0, top_p=0.9, seed=7, max_tokens=8)
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]


def test_chat_stream_is_sse(client: TestClient) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "stream": True,
        "temperature": 0,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [x for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(x[6:]) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == chat(client)["choices"][0]["message"]["content"]


def test_completions_and_stop(client: TestClient) -> None:
    body = {"model": "tiny", "prompt": "The answer is", "max_tokens": 6, "temperature": 0}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["text"]
    assert r.json()["object"] == "text_completion" and text
    stop = text.strip()[:1]
    r = client.post("/v1/completions", json={**body, "stop": [stop]})
    assert stop not in r.json()["choices"][0]["text"]


def test_limits_are_clear_4xx(client: TestClient) -> None:
    base = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/v1/chat/completions", json={**base, "max_tokens": 33})
    assert r.status_code == 400 and "limit of 32" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={**base, "messages": [{"role": "user", "content": "x" * 5000}]})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={**base, "model": "nope"})
    assert r.status_code == 404 and "tiny-lora" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_api_key_and_bind_rules(engines) -> None:
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    check_bind("::1", None)
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(ServeError, match="API key"):
            check_bind(host, None)
    check_bind("0.0.0.0", "secret")
    keyed = TestClient(create_app(engines, api_key="secret"))
    assert keyed.get("/v1/models").status_code == 401
    assert keyed.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert keyed.get("/v1/models", headers={"Authorization": "Bearer secret"}).status_code == 200


def test_serve_cli_refuses_public_host_before_loading(capsys) -> None:
    from tuneforge.cli import main

    assert main(["serve", "--model", "/does/not/matter", "--host", "0.0.0.0"]) == 2
    assert "API key" in capsys.readouterr().err


def test_concurrent_requests_are_queued_and_all_answered(client: TestClient) -> None:
    results: list[int] = []

    def ask() -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        results.append(client.post("/v1/chat/completions", json=body).status_code)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200, 200]


def test_tool_calls_are_parsed_into_the_openai_shape(client: TestClient) -> None:
    text, calls = parse_calls(
        'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert text == "Sure."
    wire = OpenAIToolCall.of(calls[0])
    assert wire.function.name == "get_weather"
    assert json.loads(wire.function.arguments) == {"city": "Oslo"}
    assert parse_calls('{"name": "f", "parameters": {}}')[1][0].name == "f"
    assert parse_calls("no call here") == ("no call here", [])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    history = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    out = chat(client, messages=history, tools=tools)
    assert out["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALLS = [
    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
    {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
]


def trained_answer() -> str:
    """What a model trained on tuneforge's own openai-format data says when it calls tools."""
    record = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {"role": "assistant", "content": None, "tool_calls": CALLS},
        ],
        "tools": TOOLS,
    }
    return format_record("openai", record, make_format_spec("openai"), "d:1").messages[-1].content


def test_an_answer_in_the_training_format_comes_back_as_tool_calls(client: TestClient, monkeypatch) -> None:
    said = trained_answer()
    monkeypatch.setattr(Generator, "run", lambda self, engine, ids, req, max_new: (said, 9, "stop"))
    out = chat(client, messages=[{"role": "user", "content": "Weather in Oslo and Rome?"}], tools=TOOLS)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    got = [
        (c["type"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in choice["message"]["tool_calls"]
    ]
    assert got == [("function", "get_weather", {"city": "Oslo"}), ("function", "get_weather", {"city": "Rome"})]
    assert all(c["id"].startswith("call_") for c in choice["message"]["tool_calls"])
    # without tools in the request the same answer is plain content, as before
    plain = chat(client, messages=[{"role": "user", "content": "hi"}])["choices"][0]
    assert plain["finish_reason"] == "stop" and plain["message"]["content"] == said


def test_a_call_in_the_history_renders_as_the_training_data_does() -> None:
    history = [
        ChatMessage(role="user", content="Weather in Oslo and Rome?"),
        ChatMessage(role="assistant", tool_calls=CALLS),
    ]
    assert to_messages(history)[1].content == trained_answer()


def test_history_call_with_arguments_that_are_not_json_is_a_400(client: TestClient) -> None:
    bad = [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{city"}}]
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": bad}]
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": msgs, "max_tokens": 2})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("messages[1].tool_calls[0].function.arguments is not valid JSON")


def test_load_engines_names_models(tiny_model_dir: Path, adapter_dir: Path) -> None:
    with pytest.raises(ServeError, match="NAME=DIR"):
        load_engines(None, str(tiny_model_dir), ["nodir"])
    engines = load_engines(None, str(tiny_model_dir), [f"mine={adapter_dir}"])
    assert list(engines) == [tiny_model_dir.name, "mine"]


def test_concurrent_greedy_answers_equal_the_unbatched_ones(client: TestClient, engines) -> None:
    """Requests of mixed lengths sent at once are decoded together; each answer is what the engine says alone."""
    from concurrent.futures import ThreadPoolExecutor

    from tuneforge.data.schema import Message
    from tuneforge.inference import GenerationParams

    asks = [("tiny", "hi"), ("tiny-lora", "What is the capital of France?"), ("tiny", "x " * 30), ("tiny-lora", "y")]
    alone = [
        engines[m].generate([Message("user", q)], GenerationParams(max_new_tokens=8)) for m, q in asks
    ]  # LocalEngine.generate: transformers' generate, one request, no scheduler

    def ask(mq: tuple[str, str]) -> str:
        m, q = mq
        return chat(client, model=m, messages=[{"role": "user", "content": q}], max_tokens=8)["choices"][0]["message"][
            "content"
        ]

    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(ask, asks))
    assert [t.strip() for t in together] == alone


def test_the_adapter_model_answers_with_its_adapter(engines) -> None:
    """The scheduler runs an unmerged single adapter with the adapter on (not the base underneath)."""
    import torch

    from tuneforge.inference import GenerationParams

    lora = engines["tiny-lora"]
    prompt = list(lora.tokenizer("The answer is")["input_ids"])
    params = GenerationParams(max_new_tokens=6)
    job = lora.submit(prompt, params)
    assert job.done.wait(60)
    x = torch.tensor([prompt])
    with torch.inference_mode():
        want = lora.model.generate(input_ids=x, attention_mask=torch.ones_like(x), **params.kwargs(lora.tokenizer))
    assert job.tokens == want[0, len(prompt) :].tolist()
