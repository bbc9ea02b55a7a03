"""The generation engine every workflow uses (eval, chat, serve, export, rag, quickstart).

A base model, optionally with a trained adapter, answering chat messages.

Prompts are rendered by `tuneforge.data.render.render_prompt`, the same function that renders training data,
so a model is asked exactly the way it was trained.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.config import ModelConfig
from tuneforge.data.render import end_of_turn_ids, render_prompt
from tuneforge.data.schema import Message
from tuneforge.errors import TuneforgeError
from tuneforge.methods import load_trained, model_load_kwargs, saved_params
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.utils.progress import progress_bar

log = logging.getLogger("tuneforge.engine")


class EngineError(TuneforgeError, ValueError):
    pass


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def kwargs(self, tokenizer: Any) -> dict[str, Any]:
        sample = self.temperature > 0
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sample,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": sorted(end_of_turn_ids(tokenizer)),
        }
        if sample:
            out.update(temperature=self.temperature, top_p=self.top_p)
        else:  # silence "temperature is set but do_sample=False" from generation configs of chat models
            out.update(temperature=None, top_p=None, top_k=None)
        return out


class LocalEngine:
    """One model in memory; `generate` is serialised by a lock so concurrent callers queue instead of crashing."""

    def __init__(self, model_cfg: ModelConfig, adapter: Path | None = None) -> None:
        if adapter is not None and not adapter.is_dir():
            raise EngineError(f"adapter folder {adapter} does not exist")
        is_full_model = adapter is not None and (adapter / "config.json").is_file()
        if is_full_model:
            model_cfg = model_cfg.model_copy(update={"path": str(adapter), "tokenizer": None})
            adapter = None
        tok_cfg = model_cfg
        if adapter is not None and (adapter / "tokenizer_config.json").is_file():
            tok_cfg = model_cfg.model_copy(update={"tokenizer": str(adapter)})
        self.tokenizer = load_tokenizer(tok_cfg)
        # The base is loaded the way the adapter was trained on it (e.g. 4-bit for QLoRA).
        params = saved_params(adapter) if adapter is not None else None
        load_kwargs = model_load_kwargs(params) if params is not None else {}
        model = load_model(model_cfg, self.tokenizer, **load_kwargs)
        if adapter is not None:
            model = load_trained(model, adapter, trust_remote_code=model_cfg.trust_remote_code)
        self.model = model.eval()
        self.name = str(adapter or model_cfg.path)
        self._lock = threading.Lock()

    def prompt_ids(self, messages: Sequence[Message], tools: str | None = None) -> list[int]:
        return render_prompt(self.tokenizer, messages, tools)

    @torch.inference_mode()
    def generate(self, messages: Sequence[Message], params: GenerationParams = GenerationParams()) -> str:
        ids = torch.tensor([self.prompt_ids(messages)])
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), **params.kwargs(self.tokenizer)
            )
        return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()

    @torch.inference_mode()
    def generate_batch(
        self, conversations: Sequence[Sequence[Message]], params: GenerationParams = GenerationParams()
    ) -> list[str]:
        """Several prompts at once, left-padded: far higher throughput than one by one on a CPU."""
        prompts = [self.prompt_ids(m) for m in conversations]
        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with self._lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(input_ids=ids, attention_mask=mask, **params.kwargs(self.tokenizer))
        return [str(self.tokenizer.decode(row[width:], skip_special_tokens=True)).strip() for row in out]

    def generate_many(
        self,
        conversations: Sequence[Sequence[Message]],
        params: GenerationParams = GenerationParams(),
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

    def stream(self, messages: Sequence[Message], params: GenerationParams = GenerationParams()) -> Iterator[str]:
        """Yield text pieces as they are generated (for the terminal chat and SSE streaming)."""
        from transformers import TextIteratorStreamer

        ids = torch.tensor([self.prompt_ids(messages)])
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
            self.model.generate(**kwargs)
