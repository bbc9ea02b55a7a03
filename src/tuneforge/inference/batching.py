"""Batched generation for concurrent callers: one scheduler thread per model runs all waiting requests together.

Why not transformers' continuous batching (`model.generate_batch` / `init_continuous_batching`, 5.24): it runs
on a CPU, but one manager has one `do_sample` and one seed for every request (a request's `seed` would not
reproduce its answer, greedy and sampled requests could not share a batch), it switches the model's attention
implementation under every other user of the model, and it cannot pick a PEFT adapter per request. So this file
is a plain batched decode loop over transformers' own pieces: `DynamicCache`, `TemperatureLogitsWarper`,
`TopPLogitsWarper` and `TextIteratorStreamer`. What is written here is what they lack:

- left-padded prompts with explicit position ids, each row stopping at its own end-of-turn token or max tokens;
- requests that arrive while a batch runs are prefilled and join it between two decode steps (the caches are
  left-padded to one length and concatenated: DynamicCache can select rows but not merge two caches);
- a `torch.Generator` per request, so a seeded request repeats whatever shares its batch;
- one adapter per batch: requests for another adapter of a shared base wait until the running batch drains.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tuneforge.inference.params import GenerationParams
from tuneforge.inference.prompt_learning import lead_in

log = logging.getLogger("tuneforge.engine")

AdapterContext = Callable[[str | None], contextlib.AbstractContextManager[Any]]


def _no_adapter_switch(adapter: str | None) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


@dataclass(eq=False)
class Job:
    """One request: its prompt ids and sampling, and what it produced so far (read by the caller's thread)."""

    prompt: list[int]
    params: GenerationParams
    adapter: str | None
    streamer: Any  # a transformers TextIteratorStreamer: the decoded text pieces, in order
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" when it ended at an end-of-turn token
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        if self.params.seed is not None:
            self.generator.manual_seed(self.params.seed)
        else:
            self.generator.seed()

    def cancel(self) -> None:
        """Stop generating for this request (a client that went away, a stop string found)."""
        self.cancelled.set()

    def pieces(self) -> Iterator[str]:
        """The text as it is generated; raises what the generation raised."""
        yield from self.streamer
        self.done.wait()
        if self.error is not None:
            raise RuntimeError(f"generation failed: {type(self.error).__name__}: {self.error}") from self.error

    def _finish(self, reason: str | None = None, error: BaseException | None = None) -> None:
        if self.done.is_set():
            return
        if reason is not None:
            self.finish_reason = reason
        self.error = error
        self.streamer.end()
        self.done.set()


@dataclass
class _Batch:
    """The running rows: their jobs, the KV cache, the attention mask, the token each feeds next and its position."""

    jobs: list[Job]
    adapter: str | None
    cache: Any  # DynamicCache, [rows, heads, width, head_dim] per layer
    mask: torch.Tensor  # [rows, width]: 1 for a real token, 0 for left padding
    next_ids: torch.Tensor  # [rows]: the last sampled token, not yet fed
    positions: torch.Tensor  # [rows]: its position id

    def select(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long)
        self.jobs = [self.jobs[i] for i in keep]
        self.mask, self.next_ids, self.positions = self.mask[index], self.next_ids[index], self.positions[index]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        lead = int((self.mask.cumsum(1) == 0).sum(1).min())  # columns that are padding in every row left
        if lead:
            self.mask = self.mask[:, lead:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]

    def join(self, other: _Batch) -> None:
        width = max(self.mask.shape[1], other.mask.shape[1])

        def left_pad(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            gap = width - t.shape[-dim_from_end]
            return F.pad(t, (0, 0) * (dim_from_end - 1) + (gap, 0)) if gap else t

        self.jobs += other.jobs
        self.mask = torch.cat([left_pad(self.mask, 1), left_pad(other.mask, 1)])
        self.next_ids = torch.cat([self.next_ids, other.next_ids])
        self.positions = torch.cat([self.positions, other.positions])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([left_pad(mine.keys, 2), left_pad(theirs.keys, 2)])
            mine.values = torch.cat([left_pad(mine.values, 2), left_pad(theirs.values, 2)])


class BatchScheduler:
    """Collects the requests waiting for one model (up to `max_batch` rows) and decodes them together."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_ids: set[int],
        max_batch: int = 16,
        adapter_context: AdapterContext = _no_adapter_switch,
    ) -> None:
        self.model, self.tokenizer, self.eos_ids = model, tokenizer, set(eos_ids)
        self.max_batch = max(1, max_batch)
        self.adapter_context = adapter_context
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode steps run, and rows in them: a mean batch size for logs and tests
        self.rows = 0

    def submit(self, prompt: Sequence[int], params: GenerationParams, adapter: str | None = None) -> Job:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        job = Job(list(prompt), params, adapter, streamer)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batch scheduler is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tuneforge-batcher", daemon=True)
                self._thread.start()
            self._waiting.append(job)
            self._cond.notify()
        return job

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _take(self, batch: _Batch | None) -> list[Job]:
        """Jobs to start now: those of the running batch's adapter while there is room, oldest first.

        A job for another adapter at the head of the queue stops further joins, so the batch drains and it runs next.
        """
        with self._cond:
            while batch is None and not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            adapter = batch.adapter if batch is not None else self._waiting[0].adapter
            room = self.max_batch - (len(batch.jobs) if batch is not None else 0)
            taken: list[Job] = []
            while self._waiting and len(taken) < room and self._waiting[0].adapter == adapter:
                job = self._waiting.popleft()
                if job.cancelled.is_set():  # gone before it started: nothing to compute
                    job._finish("stop")
                else:
                    taken.append(job)
            return taken

    def _loop(self) -> None:
        batch: _Batch | None = None
        while True:
            joining = self._take(batch)
            if self._closed:
                for job in (batch.jobs if batch else []) + joining + list(self._waiting):
                    job._finish(error=RuntimeError("the server is shutting down"))
                return
            try:
                with torch.inference_mode():
                    if joining:
                        new = self._prefill(joining)
                        if batch is None:
                            batch = new
                        elif new is not None:
                            batch.join(new)
                    batch = self._step(batch) if batch is not None else None
            except Exception as e:  # a bug or an out-of-memory: fail these requests, keep serving the next ones
                log.exception("batched generation failed")
                for job in (batch.jobs if batch else []) + joining:
                    job._finish(error=e)
                batch = None

    def _prefill(self, jobs: list[Job]) -> _Batch | None:
        from transformers import DynamicCache

        width = max(len(j.prompt) for j in jobs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(j.prompt)) + j.prompt for j in jobs])
        mask = torch.tensor([[0] * (width - len(j.prompt)) + [1] * len(j.prompt) for j in jobs])
        with self.adapter_context(jobs[0].adapter):
            # a prompt-learning adapter's virtual tokens lead the rows: in the mask, and in the cache (a prefix)
            # or the first pass's embeddings; every pass then runs on the base model (inference.prompt_learning)
            lead = lead_in(self.model)
            inputs, mask = lead.prefill(ids, mask)
            inputs.setdefault("cache", DynamicCache())  # no config: plain layers on every model, so rows join and cut
            logits = lead(**inputs, use_cache=True).logits[:, -1].float()
        batch = _Batch(jobs, jobs[0].adapter, inputs["cache"], mask, self._sample(jobs, logits), mask.sum(1))
        return self._emit(batch)

    def _step(self, batch: _Batch) -> _Batch | None:
        mask = torch.cat([batch.mask, torch.ones(len(batch.jobs), 1, dtype=batch.mask.dtype)], dim=1)
        with self.adapter_context(batch.adapter):
            out = lead_in(self.model)(
                input_ids=batch.next_ids[:, None],
                attention_mask=mask,
                position_ids=batch.positions[:, None],
                cache=batch.cache,
                use_cache=True,
            )
        logits = out.logits[:, -1].float()
        self.steps, self.rows = self.steps + 1, self.rows + len(batch.jobs)
        batch.mask, batch.positions = mask, batch.positions + 1
        batch.next_ids = self._sample(batch.jobs, logits)
        return self._emit(batch)

    def _sample(self, jobs: list[Job], logits: torch.Tensor) -> torch.Tensor:
        """Greedy rows by argmax over the batch; sampled rows through transformers' warpers and their own RNG."""
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        chosen = logits.argmax(-1)
        for row, job in enumerate(jobs):
            p = job.params
            if p.temperature <= 0:
                continue
            scores = TemperatureLogitsWarper(p.temperature)(None, logits[row : row + 1])
            if p.top_p < 1.0:
                scores = TopPLogitsWarper(p.top_p)(None, scores)
            chosen[row] = torch.multinomial(scores.softmax(-1)[0], 1, generator=job.generator)[0]
        return chosen

    def _emit(self, batch: _Batch) -> _Batch | None:
        """Hand each row its new token; rows that ended (or were cancelled) leave the batch."""
        keep = []
        for row, job in enumerate(batch.jobs):
            if job.cancelled.is_set():
                job._finish("stop")
                continue
            token = int(batch.next_ids[row])
            job.tokens.append(token)
            if token in self.eos_ids:
                job._finish("stop")
                continue
            job.streamer.put(torch.tensor([token]))
            if len(job.tokens) >= job.params.max_new_tokens:
                job._finish("length")
                continue
            keep.append(row)
        if not keep:
            return None
        if len(keep) < len(batch.jobs):
            batch.select(keep)
        return batch
