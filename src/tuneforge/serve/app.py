"""`tuneforge serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over local engines.

One adapter is merged into its base for inference when its method allows (`LocalEngine(merge_adapter=True)`);
several LoRA-type adapters that fit one base share one copy of it as PEFT named adapters
(`inference.engines_for_adapters`); any other adapter gets its own engine. Concurrent requests are batched:
each model's scheduler thread (`inference.batching`) decodes up to `max_batch` waiting requests together and
streams each one's text as it comes.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.config import ModelConfig
from tuneforge.data.render import render_prompt
from tuneforge.data.schema import DataError, Message
from tuneforge.data.toolcalls import render_calls
from tuneforge.errors import TuneforgeError
from tuneforge.inference import GenerationParams, Job, LocalEngine, engines_for_adapters
from tuneforge.runs import RunDir, model_config_of_run
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
from tuneforge.serve.tools import ToolPlan, ToolStream, plan_tools, read_calls, with_note


class ServeExtraMissing(TuneforgeError, ImportError):
    """FastAPI / uvicorn are not installed: the user installs the `serve` extra."""


try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
except ImportError as e:  # pragma: no cover - the message names the extra
    raise ServeExtraMissing(f"tuneforge serve needs the serve extra ({e}): pip install 'tuneforge[serve]'") from e

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
    """Token-level generation for the HTTP API: prompt ids in, text out, through each model's batch scheduler.

    Stop strings are cut from the text (and end the request's generation); while streaming, text that may be the
    start of a stop string is held back until it is clear that it is not.
    """

    def __init__(self, max_batch: int = 16) -> None:
        self.max_batch = max_batch

    def submit(self, engine: LocalEngine, ids: list[int], req: Sampling, max_new: int) -> Job:
        params = GenerationParams(max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p, seed=req.seed)
        return engine.submit(ids, params, self.max_batch)

    def run(self, engine: LocalEngine, ids: list[int], req: Sampling, max_new: int) -> tuple[str, int, str]:
        return self.finish(self.submit(engine, ids, req, max_new), req)

    def finish(self, job: Job, req: Sampling) -> tuple[str, int, str]:
        """(text, completion tokens, finish reason) of a submitted job, once it has ended."""
        stopped: list[bool] = []
        text = "".join(_until_stop(job, req.stops(), stopped))
        return text, len(job.tokens), "stop" if stopped else job.finish_reason

    def stream(self, engine: LocalEngine, ids: list[int], req: Sampling, max_new: int) -> Iterator[str]:
        """Text pieces as they are generated; a client that disconnects cancels its generation."""
        yield from _until_stop(self.submit(engine, ids, req, max_new), req.stops(), [])


def _until_stop(job: Job, stops: list[str], stopped: list[bool]) -> Iterator[str]:
    """The job's text pieces up to the first stop string (then `stopped` gets True and the job is cancelled)."""
    hold = max((len(s) for s in stops), default=1) - 1
    try:
        text, sent = "", 0
        for piece in job.pieces():
            text += piece
            cut, hit = cut_at_stop(text, stops)
            end = len(cut) if hit else max(sent, len(text) - hold)
            if end > sent:
                yield cut[sent:end] if hit else text[sent:end]
                sent = end
            if hit:
                stopped.append(True)
                return
        if len(text) > sent:
            yield text[sent:]
    finally:
        job.cancel()


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
    max_batch: int = 16,
    max_tools: int | None = None,
) -> FastAPI:
    """`max_tools`: requests offering more tools show the model the k best by BM25 (docs/tooluse.md)."""
    if not engines:
        raise ServeError("no model to serve")
    app = FastAPI(title="tuneforge", version="1")
    gen = Generator(max_batch)
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        given = request.headers.get("authorization", "").encode()
        if api_key and not hmac.compare_digest(given, expected):  # constant time: no timing hint at the key
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
        try:
            plan = plan_tools(req, engine.tokenizer, engine.tool_format)
        except DataError as e:
            raise _err(400, str(e), "tools") from None
        k = max_tools if max_tools is not None else engine.max_tools
        try:
            messages = with_note(to_messages(req.messages), plan)
            ids = render_prompt(engine.tokenizer, messages, plan.tools_json, engine.tool_format, k)
        except DataError as e:
            raise _err(400, str(e), "messages") from None
        if plan.opening:  # tool_choice required / named: the answer starts as a call (serve/tools.py)
            ids += list(engine.tokenizer(plan.opening, add_special_tokens=False)["input_ids"])
        max_new = budget(engine, ids, req.max_completion_tokens or req.max_tokens)
        if req.stream:
            events = _chat_events(gen, engine, ids, req, max_new, plan)
            return StreamingResponse(events, media_type="text/event-stream")
        text, n, finish = gen.run(engine, ids, req, max_new)
        content, found = read_calls(text, plan)
        calls = [OpenAIToolCall.of(c) for c in found]
        message = AssistantMessage(content=content, tool_calls=calls or None)
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
        jobs = [gen.submit(engine, ids, req, max_new) for ids in batch]  # submitted together: decoded as one batch
        for i, (prompt, job) in enumerate(zip(prompts, jobs, strict=True)):
            text, n, finish = gen.finish(job, req)
            choices.append(CompletionChoice(index=i, text=prompt + text if req.echo else text, finish_reason=finish))  # type: ignore[arg-type]
            used += n
        prompt_tokens = sum(len(b) for b in batch)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=used, total_tokens=prompt_tokens + used)
        return Completion(model=req.model, choices=choices, usage=usage)

    return app


def _sse(obj: Any) -> str:
    return f"data: {obj.model_dump_json(exclude_none=True)}\n\n"


def _chat_events(
    gen: Generator, engine: LocalEngine, ids: list[int], req: ChatCompletionRequest, max_new: int, plan: ToolPlan
) -> Iterator[str]:
    chunk = ChatCompletionChunk(
        id="", model=req.model, choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))]
    )
    cid = f"chatcmpl-{chunk.created}-{id(chunk):x}"
    yield _sse(chunk.model_copy(update={"id": cid}))
    stream = ToolStream(plan)  # content as it comes; a call is held until complete, then sent as tool_calls

    def event(delta: dict[str, Any]) -> str:
        return _sse(ChatCompletionChunk(id=cid, model=req.model, choices=[ChunkChoice(delta=ChunkDelta(**delta))]))

    for piece in gen.stream(engine, ids, req, max_new):
        yield from map(event, stream.feed(piece))
    yield from map(event, stream.close())
    finish = "tool_calls" if stream.calls else "stop"
    yield _sse(
        ChatCompletionChunk(id=cid, model=req.model, choices=[ChunkChoice(delta=ChunkDelta(), finish_reason=finish)])
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
    """One engine per model name: the run (named after its folder) or the model, then each NAME=DIR adapter.

    A single adapter is merged into its base when it can be; several share one base where they fit
    (`inference.engines_for_adapters`).
    """
    named: dict[str, Path | None] = {}
    tool_format = "auto"
    if run is not None:
        model_cfg, output = model_config_of_run(Path(run))
        named[Path(run).resolve().name] = output
        tool_format = RunDir(Path(run)).tool_format()  # prompts show tools the way the run trained
    else:
        model_cfg = ModelConfig(path=str(model))
        named[Path(str(model)).name or str(model)] = None
    for spec in adapters:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise ServeError(f"--adapter expects NAME=DIR, got {spec!r}")
        if name in named:
            raise ServeError(f"model name {name!r} is used twice")
        named[name] = Path(folder)
    engines = engines_for_adapters(model_cfg, named)
    for engine in engines.values():
        engine.tool_format = tool_format
    return engines


def serve_main(args: argparse.Namespace) -> int:
    import uvicorn

    api_key = args.api_key or os.environ.get("TUNEFORGE_API_KEY") or None
    check_bind(args.host, api_key)  # before loading anything slow
    engines = load_engines(args.run, args.model, args.adapter)
    max_batch = args.max_batch
    max_tools = args.max_tools
    app = create_app(
        engines, api_key=api_key, max_tokens_limit=args.max_tokens_limit, max_batch=max_batch, max_tools=max_tools
    )
    where = f"http://{args.host}:{args.port}/v1"
    log.info("serving %s on %s (up to %d requests per batch)", ", ".join(engines), where, max_batch)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
