"""`tuneforge serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over local engines.

Several adapters on one base are served as separate engines, one per model name, each with its own copy of the
base: this works for every method (PEFT, native adapters, QLoRA bases, full models) at the cost of memory.
All generation goes through one lock, so concurrent requests queue instead of competing for the CPU.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.config import ModelConfig
from tuneforge.data.render import render_prompt
from tuneforge.data.schema import DataError, Message
from tuneforge.data.toolcalls import parse_calls, render_calls
from tuneforge.errors import TuneforgeError
from tuneforge.inference import GenerationParams, LocalEngine
from tuneforge.runs import model_config_of_run
from tuneforge.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    OpenAIToolCall,
    Sampling,
    Usage,
    error_body,
)

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
except ImportError as e:  # pragma: no cover - the message names the extra
    raise ImportError("tuneforge serve needs the serve extra: pip install 'tuneforge[serve]'") from e

log = logging.getLogger("tuneforge.serve")


class ServeError(TuneforgeError, ValueError):
    pass


def check_bind(host: str, api_key: str | None) -> None:
    """Loopback needs no key; any other address (including 0.0.0.0) does."""
    if api_key:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ServeError(f"refusing to serve on {host} without an API key: pass --api-key (or set TUNEFORGE_API_KEY)")


class Generator:
    """Token-level generation for the HTTP API: prompt ids in, text out, stop strings and a shared lock."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def kwargs(self, engine: LocalEngine, req: Sampling, max_new: int) -> dict[str, Any]:
        params = GenerationParams(max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p)
        out = params.kwargs(engine.tokenizer)
        if req.stops():
            out.update(stop_strings=req.stops(), tokenizer=engine.tokenizer)
        return out

    def run(self, engine: LocalEngine, ids: list[int], req: Sampling, max_new: int) -> tuple[str, int, str]:
        import torch

        x = torch.tensor([ids])
        with self.lock, torch.inference_mode():
            if req.seed is not None:
                torch.manual_seed(req.seed)
            out = engine.model.generate(
                input_ids=x, attention_mask=torch.ones_like(x), **self.kwargs(engine, req, max_new)
            )
        new = out[0, len(ids) :].tolist()
        text, stopped = cut_at_stop(str(engine.tokenizer.decode(new, skip_special_tokens=True)), req.stops())
        finish = "length" if len(new) >= max_new and not stopped and not _ends_turn(engine, new) else "stop"
        return text, len(new), finish

    def stream(self, engine: LocalEngine, ids: list[int], req: Sampling, max_new: int) -> Iterator[str]:
        """Text pieces; stop strings are held back until it is clear they are not the start of a stop."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = threading.Event()

        class Cancelled(StoppingCriteria):  # a client that disconnects stops the generation it started
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
                return cancel.is_set()

        streamer = TextIteratorStreamer(engine.tokenizer, skip_prompt=True, skip_special_tokens=True)
        x = torch.tensor([ids])
        kwargs = {"input_ids": x, "attention_mask": torch.ones_like(x), "streamer": streamer}
        kwargs.update(self.kwargs(engine, req, max_new), stopping_criteria=StoppingCriteriaList([Cancelled()]))
        stops, hold = req.stops(), max((len(s) for s in req.stops()), default=1) - 1
        with self.lock:
            if req.seed is not None:
                torch.manual_seed(req.seed)
            worker = threading.Thread(target=_generate, args=(engine.model,), kwargs=kwargs, daemon=True)
            worker.start()
            try:
                text, sent = "", 0
                for piece in streamer:
                    text += piece
                    cut, stopped = cut_at_stop(text, stops)
                    end = len(cut) if stopped else max(sent, len(text) - hold)
                    if end > sent:
                        yield cut[sent:end] if stopped else text[sent:end]
                        sent = end
                    if stopped:
                        return
                if len(text) > sent:
                    yield text[sent:]
            finally:
                cancel.set()
                worker.join()


def _generate(model: Any, **kwargs: Any) -> None:
    import torch

    with torch.inference_mode():
        model.generate(**kwargs)


def _ends_turn(engine: LocalEngine, new: list[int]) -> bool:
    from tuneforge.data.render import end_of_turn_ids

    return bool(new) and new[-1] in end_of_turn_ids(engine.tokenizer)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def to_messages(messages: list[ChatMessage]) -> list[Message]:
    """OpenAI messages as tuneforge messages; assistant tool calls become the tool-call text models are trained on."""
    out = []
    for i, m in enumerate(messages):
        calls = [c.to_call(f"messages[{i}].tool_calls[{j}].function") for j, c in enumerate(m.tool_calls or ())]
        out.append(Message("system" if m.role == "developer" else m.role, render_calls(calls, m.text())))
    return out


def _err(status: int, message: str, param: str | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=error_body(message, param=param)["error"])


def create_app(
    engines: dict[str, LocalEngine],
    *,
    api_key: str | None = None,
    max_tokens_limit: int = 1024,
    max_request_bytes: int = 1_000_000,
) -> FastAPI:
    if not engines:
        raise ServeError("no model to serve")
    app = FastAPI(title="tuneforge", version="1")
    gen = Generator(threading.Lock())

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            return JSONResponse(error_body("invalid or missing API key", "authentication_error"), status_code=401)
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_request_bytes:
            msg = f"request body of {size} bytes exceeds the limit of {max_request_bytes} bytes"
            return JSONResponse(error_body(msg), status_code=413)
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else error_body(str(exc.detail))["error"]
        return JSONResponse({"error": detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return JSONResponse(error_body(f"{where}: {first.get('msg', 'invalid request')}", param=where), status_code=400)

    def pick(req: Sampling) -> LocalEngine:
        if req.model not in engines:
            raise _err(404, f"model {req.model!r} not found; available: {', '.join(engines)}", "model")
        return engines[req.model]

    def budget(engine: LocalEngine, ids: list[int], asked: int | None) -> int:
        max_new = asked if asked is not None else min(256, max_tokens_limit)
        if max_new > max_tokens_limit:
            raise _err(400, f"max_tokens={max_new} exceeds this server's limit of {max_tokens_limit}", "max_tokens")
        context = getattr(engine.model.config, "max_position_embeddings", None)
        if context and len(ids) + max_new > context:
            msg = f"prompt ({len(ids)} tokens) + max_tokens ({max_new}) exceed the model's context of {context}"
            raise _err(400, msg, "messages")
        return max_new

    @app.get("/v1/models")
    def models() -> ModelList:
        return ModelList(data=[ModelCard(id=name) for name in engines])

    @app.post("/v1/chat/completions", response_model=None)
    def chat(req: ChatCompletionRequest) -> ChatCompletion | StreamingResponse:
        engine = pick(req)
        tools = json.dumps(req.tools) if req.tools and req.tool_choice != "none" else None
        try:
            ids = render_prompt(engine.tokenizer, to_messages(req.messages), tools)
        except DataError as e:
            raise _err(400, str(e), "messages") from None
        max_new = budget(engine, ids, req.max_completion_tokens or req.max_tokens)
        if req.stream:
            return StreamingResponse(_chat_events(gen, engine, ids, req, max_new), media_type="text/event-stream")
        text, n, finish = gen.run(engine, ids, req, max_new)
        calls: list[OpenAIToolCall] = []
        if tools:
            text, found = parse_calls(text)
            calls = [OpenAIToolCall.of(c) for c in found]
        message = AssistantMessage(content=text if text or not calls else None, tool_calls=calls or None)
        choice = ChatChoice(message=message, finish_reason="tool_calls" if calls else finish)  # type: ignore[arg-type]
        return ChatCompletion(
            model=req.model,
            choices=[choice],
            usage=Usage(prompt_tokens=len(ids), completion_tokens=n, total_tokens=len(ids) + n),
        )

    @app.post("/v1/completions", response_model=None)
    def completions(req: CompletionRequest) -> Completion | StreamingResponse:
        engine = pick(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts or (req.stream and len(prompts) != 1):
            raise _err(400, "give one prompt (a string), or a list of prompts without stream", "prompt")
        batch = [list(engine.tokenizer(p)["input_ids"]) for p in prompts]
        max_new = max(budget(engine, ids, req.max_tokens) for ids in batch)
        if req.stream:
            return StreamingResponse(
                _completion_events(gen, engine, batch[0], req, max_new), media_type="text/event-stream"
            )
        choices, used = [], 0
        for i, (prompt, ids) in enumerate(zip(prompts, batch, strict=True)):
            text, n, finish = gen.run(engine, ids, req, max_new)
            choices.append(CompletionChoice(index=i, text=prompt + text if req.echo else text, finish_reason=finish))  # type: ignore[arg-type]
            used += n
        prompt_tokens = sum(len(b) for b in batch)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=used, total_tokens=prompt_tokens + used)
        return Completion(model=req.model, choices=choices, usage=usage)

    return app


def _sse(obj: Any) -> str:
    return f"data: {obj.model_dump_json(exclude_none=True)}\n\n"


def _chat_events(
    gen: Generator, engine: LocalEngine, ids: list[int], req: ChatCompletionRequest, max_new: int
) -> Iterator[str]:
    chunk = ChatCompletionChunk(
        id="", model=req.model, choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))]
    )
    cid = f"chatcmpl-{chunk.created}-{id(chunk):x}"
    yield _sse(chunk.model_copy(update={"id": cid}))
    for piece in gen.stream(engine, ids, req, max_new):
        yield _sse(ChatCompletionChunk(id=cid, model=req.model, choices=[ChunkChoice(delta=ChunkDelta(content=piece))]))
    yield _sse(
        ChatCompletionChunk(id=cid, model=req.model, choices=[ChunkChoice(delta=ChunkDelta(), finish_reason="stop")])
    )
    yield "data: [DONE]\n\n"


def _completion_events(
    gen: Generator, engine: LocalEngine, ids: list[int], req: CompletionRequest, max_new: int
) -> Iterator[str]:
    cid = f"cmpl-{id(req):x}"
    for piece in gen.stream(engine, ids, req, max_new):
        yield _sse(Completion(id=cid, model=req.model, choices=[CompletionChoice(text=piece, finish_reason=None)]))
    yield _sse(Completion(id=cid, model=req.model, choices=[CompletionChoice(text="", finish_reason="stop")]))
    yield "data: [DONE]\n\n"


def load_engines(run: str | None, model: str | None, adapters: list[str]) -> dict[str, LocalEngine]:
    """One engine per model name: the run (named after its folder) or the model, then each NAME=DIR adapter."""
    engines: dict[str, LocalEngine] = {}
    if run is not None:
        model_cfg, output = model_config_of_run(Path(run))
        engines[Path(run).resolve().name] = LocalEngine(model_cfg, output)
    else:
        model_cfg = ModelConfig(path=str(model))
        engines[Path(str(model)).name or str(model)] = LocalEngine(model_cfg)
    for spec in adapters:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ServeError(f"--adapter expects NAME=DIR, got {spec!r}")
        if name in engines:
            raise ServeError(f"model name {name!r} is used twice")
        engines[name] = LocalEngine(model_cfg, Path(folder))
    return engines


def serve_main(args: argparse.Namespace) -> int:
    import uvicorn

    api_key = args.api_key or os.environ.get("TUNEFORGE_API_KEY") or None
    check_bind(args.host, api_key)  # before loading anything slow
    engines = load_engines(args.run, args.model, args.adapter)
    app = create_app(engines, api_key=api_key, max_tokens_limit=args.max_tokens_limit)
    log.info("serving %s on http://%s:%d/v1", ", ".join(engines), args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
