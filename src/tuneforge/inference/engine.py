"""The generation engine every workflow uses (eval, chat, serve, export, rag, quickstart).

A base model, optionally with a trained adapter, answering chat messages.

Prompts are rendered by `tuneforge.data.render.render_prompt`, the same function that renders training data,
so a model is asked exactly the way it was trained.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tuneforge.config import ModelConfig
from tuneforge.data.render import end_of_turn_ids, render_prompt
from tuneforge.data.schema import Message
from tuneforge.errors import TuneforgeError
from tuneforge.inference import prompt_learning
from tuneforge.inference.base import adapter_tokenizer, load_base
from tuneforge.inference.batching import BatchScheduler
from tuneforge.inference.params import GenerationParams
from tuneforge.methods import MethodError, load_trained, merge, method_of, model_load_kwargs, saved_params
from tuneforge.methods.qlora import is_quantized
from tuneforge.models.loader import load_tokenizer
from tuneforge.utils.progress import progress_bar

log = logging.getLogger("tuneforge.engine")

DEFAULT_PARAMS = GenerationParams()


class EngineError(TuneforgeError, ValueError):
    pass


class LocalEngine:
    """One model in memory; `generate` is serialised by a lock so concurrent callers queue instead of crashing.

    `merge_adapter=True` folds a mergeable adapter (LoRA family, BitFit) into an unquantised base for inference:
    as fast as the base alone, the same logits within fp32 round-off. `batcher()` is the model's batch scheduler
    for concurrent callers (the server). Engines made by `view` share one model (several PEFT adapters on one
    base) and its scheduler; `adapter_name` is the PEFT adapter a view's requests run with (None: the base).
    """

    adapter_name: str | None = None
    merged: bool = False
    # How prompts show tools (data.tool_format of the run that trained the adapter; docs/tooluse.md) and how
    # many at most (the tool retriever; None: all). Set by whoever loads a run: serve, chat, eval.
    tool_format: str = "auto"
    max_tools: int | None = None

    def __init__(self, model_cfg: ModelConfig, adapter: Path | None = None, *, merge_adapter: bool = False) -> None:
        if adapter is not None and not adapter.is_dir():
            raise EngineError(f"adapter folder {adapter} does not exist")
        is_full_model = adapter is not None and (adapter / "config.json").is_file()
        if is_full_model:
            model_cfg = model_cfg.model_copy(update={"path": str(adapter), "tokenizer": None})
            adapter = None
        if adapter is not None and model_cfg.adapter is not None and not model_cfg.merge_adapter:
            raise EngineError(
                f"model.adapter={model_cfg.adapter!r} puts an adapter on the base unmerged, and {adapter} would be "
                "a second one on top; set model.merge_adapter=true to fold the first into the base"
            )
        tok_cfg = adapter_tokenizer(model_cfg)
        if adapter is not None and (adapter / "tokenizer_config.json").is_file():
            tok_cfg = model_cfg.model_copy(update={"tokenizer": str(adapter)})
        self.tokenizer = load_tokenizer(tok_cfg)
        # The base is loaded the way the adapter was trained on it (e.g. 4-bit for QLoRA), with the adapters of
        # model.adapter folded in where a run started from an earlier one (inference.base).
        params = saved_params(adapter) if adapter is not None else None
        load_kwargs = model_load_kwargs(params) if params is not None else {}
        model = load_base(model_cfg, self.tokenizer, **load_kwargs)
        if adapter is not None:
            model = load_trained(model, adapter, trust_remote_code=model_cfg.trust_remote_code)
            if merge_adapter:
                model, self.merged = _merged_for_inference(model, params, adapter)
        self.model = model.eval()
        self.name = str(adapter or model_cfg.path)
        self._lock = threading.Lock()
        self._shared: dict[str, Any] = {"batcher": None, "lock": threading.Lock()}  # one per model, kept by views

    def view(self, name: str, adapter_name: str | None) -> LocalEngine:
        """Another name for this engine's model, running its requests with PEFT adapter `adapter_name`."""
        other = copy.copy(self)
        other.name, other.adapter_name = name, adapter_name
        self._shared["switches"] = True  # from now on every engine on this model names its adapter
        return other

    def adapter_context(self, adapter_name: str | None) -> contextlib.AbstractContextManager[Any]:
        """Select a named adapter of a shared PEFT model for the next forward passes (None: the base alone)."""
        if not self._shared.get("switches") or not hasattr(self.model, "set_adapter"):
            return contextlib.nullcontext()  # one model, one adapter (or none): nothing to switch
        if adapter_name is None:
            return self.model.disable_adapter()  # type: ignore[no-any-return]
        self.model.set_adapter(adapter_name)
        return contextlib.nullcontext()

    def batcher(self, max_batch: int = 16) -> BatchScheduler:
        """The scheduler that batches concurrent requests to this model (created on first use, shared by views)."""
        with self._shared["lock"]:
            if self._shared["batcher"] is None:
                self._shared["batcher"] = BatchScheduler(
                    self.model,
                    self.tokenizer,
                    end_of_turn_ids(self.tokenizer),
                    max_batch=max_batch,
                    adapter_context=self.adapter_context,
                )
            batcher: BatchScheduler = self._shared["batcher"]
            batcher.max_batch = max(1, max_batch)
            return batcher

    def submit(self, prompt: Sequence[int], params: GenerationParams, max_batch: int = 16) -> Any:
        """Queue one generation for the batch scheduler; returns its `Job` (text pieces, tokens, finish reason)."""
        return self.batcher(max_batch).submit(prompt, params, self.adapter_name)

    def prompt_ids(self, messages: Sequence[Message], tools: str | None = None) -> list[int]:
        return render_prompt(self.tokenizer, messages, tools, self.tool_format, self.max_tools)

    @torch.inference_mode()
    def generate(
        self, messages: Sequence[Message], params: GenerationParams = DEFAULT_PARAMS, tools: str | None = None
    ) -> str:
        """The answer; `tools` (JSON schemas) are shown as the run trained (its calls read by data.toolcalls)."""
        ids = torch.tensor([self.prompt_ids(messages, tools)])
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = prompt_learning.generate(self.model, ids, torch.ones_like(ids), **params.kwargs(self.tokenizer))
        return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()

    @torch.inference_mode()
    def generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        params: GenerationParams = DEFAULT_PARAMS,
        tools: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Several prompts at once, left-padded: far higher throughput than one by one on a CPU."""
        offered = list(tools) if tools is not None else [None] * len(conversations)
        prompts = [self.prompt_ids(m, t) for m, t in zip(conversations, offered, strict=True)]
        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = prompt_learning.generate(self.model, ids, mask, **params.kwargs(self.tokenizer))
        return [str(self.tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]

    def generate_many(
        self,
        conversations: Sequence[Sequence[Message]],
        params: GenerationParams = DEFAULT_PARAMS,
        batch_size: int = 8,
        desc: str = "generating",
    ) -> list[str]:
        """Many prompts in batches of `batch_size`, with a progress bar: a long phase is never silent."""
        out: list[str] = []
        with progress_bar(len(conversations), desc, unit="answer") as bar:
            for start in range(0, len(conversations), batch_size):
                batch = conversations[start : start + batch_size]
                out += self.generate_batch(batch, params)
                bar.update(len(batch))
        return out

    def stream(
        self, messages: Sequence[Message], params: GenerationParams = DEFAULT_PARAMS, tools: str | None = None
    ) -> Iterator[str]:
        """Yield text pieces as they are generated (for the terminal chat and SSE streaming)."""
        from transformers import TextIteratorStreamer

        ids = torch.tensor([self.prompt_ids(messages, tools)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "streamer": streamer}
        kwargs.update(params.kwargs(self.tokenizer))
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            worker = threading.Thread(target=self._generate_no_grad, kwargs=kwargs, daemon=True)
            worker.start()
            yield from streamer
            worker.join()

    def _generate_no_grad(self, **kwargs: Any) -> None:
        with torch.inference_mode():
            prompt_learning.generate(self.model, **kwargs)


def _merged_for_inference(model: Any, params: Any, adapter: Path) -> tuple[Any, bool]:
    """(model, merged): the adapter folded into the base when its method allows and the base is not quantised.

    An unmerged LoRA adds two small matmuls per target layer per token (10 tokens/s against 15.8 for the base
    alone on the embedded model); merged, inference runs at the base's speed.
    """
    if is_quantized(model):
        log.info("serving %s unmerged: its base is quantised (merging would dequantise it)", adapter)
        return model, False
    if params is not None and not method_of(params).mergeable:
        log.info("serving %s unmerged: method %s cannot be merged", adapter, params.name)
        return model, False
    try:
        merged = merge(model)
    except MethodError as e:
        log.info("serving %s unmerged: %s", adapter, e)
        return model, False
    log.info("merged adapter %s into the base for inference", adapter)
    return merged, True
