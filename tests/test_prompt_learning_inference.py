"""A prompt-learning adapter's virtual tokens reach every inference path: eval's log-likelihoods and greedy
generation, the engine's batched generation and stream, and the server's batch scheduler all give what PEFT's own
full forward over the whole text gives (no cache, no padding), and that differs from the base model's.

A path that dropped the prefix (peft 0.21's generate on transformers >= 5.24, inference.prompt_learning), inserted
the virtual tokens again before a continuation, or moved them before a row's left padding fails here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny import build_model, build_tokenizer
from tuneforge.config import MethodSection, ModelConfig
from tuneforge.data.render import end_of_turn_ids
from tuneforge.data.schema import Message
from tuneforge.eval.lm import LM
from tuneforge.inference import GenerationParams, LocalEngine
from tuneforge.methods import apply_method, save_trained
from tuneforge.methods.prompt import MptParams, PrefixTuningParams, PromptTuningParams, PTuningParams, PTuningV2Params
from tuneforge.models.loader import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS: dict[str, MethodSection] = {
    "prefix_tuning": PrefixTuningParams(num_virtual_tokens=4),
    "p_tuning_v2": PTuningV2Params(num_virtual_tokens=4),
    "prompt_tuning": PromptTuningParams(num_virtual_tokens=4, init="random"),
    "p_tuning": PTuningParams(num_virtual_tokens=4),
    "mpt": MptParams(num_virtual_tokens=4),
}
TEXTS = ["What is the capital of France?", "Translate to French: hello", "yes no"]  # three lengths: left padding
NEW = 5


@pytest.fixture(scope="module")
def sharp_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with weights of std 0.3: the default init (0.02) answers one repeated token whatever the
    prompt, so greedy answers could not tell a prefix from none."""
    folder = tmp_path_factory.mktemp("sharp-tiny")
    tokenizer = build_tokenizer("chatml")
    model = build_model(tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base_engine(sharp_base: Path) -> LocalEngine:
    return LocalEngine(ModelConfig(path=str(sharp_base)))


@pytest.fixture(scope="module", params=list(METHODS))
def engine(request: pytest.FixtureRequest, sharp_base: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalEngine:
    """A run's adapter with large random virtual tokens (PEFT's init barely moves the logits), saved as training
    saves it and loaded as eval, chat and serve load it."""
    params = METHODS[request.param]
    cfg = ModelConfig(path=str(sharp_base))
    torch.manual_seed(1)
    model = apply_method(load_model(cfg, build_tokenizer("chatml")), params)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 1.0)
    out = save_trained(model, params, tmp_path_factory.mktemp(request.param) / "adapter", build_tokenizer("chatml"))
    return LocalEngine(cfg, out)


def full_logprobs(model: Any, ids: list[int]) -> torch.Tensor:
    """log-probabilities after each of `ids`, from one forward over them alone (PEFT's own path)."""
    row = torch.tensor([ids])
    with torch.no_grad(), warnings.catch_warnings():
        # PeftModel.forward hands a prefix to the model as `past_key_values` (peft 0.21; transformers 5.24 renamed it)
        warnings.filterwarnings("ignore", message="`past_key_values` is deprecated", category=FutureWarning)
        logits = model(input_ids=row, attention_mask=torch.ones_like(row)).logits[0, -len(ids) :]
    return torch.log_softmax(logits.float(), dim=-1)


def full_loglikelihood(model: Any, ctx: list[int], cont: list[int]) -> float:
    logp = full_logprobs(model, ctx + cont)
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


def full_greedy(model: Any, ids: list[int], stop: set[int]) -> list[int]:
    new: list[int] = []
    while len(new) < NEW and (not new or new[-1] not in stop):
        new.append(int(full_logprobs(model, ids + new)[-1].argmax()))
    return new


@contextmanager
def no_cache_warnings() -> Iterator[None]:
    """Fails on the warnings a dropped or doubled prefix gives (the user could do nothing about them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    said = [str(w.message) for w in caught if "past_key_values" in str(w.message) or "Position ids" in str(w.message)]
    assert not said


def test_loglikelihoods_are_peft_forward(engine: LocalEngine, base_engine: LocalEngine) -> None:
    tok = engine.tokenizer
    ctxs = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    cont = tok(" The capital of France is Paris.", add_special_tokens=False)["input_ids"]
    # contexts of three lengths in one batch, a context shared by two continuations, a one-token continuation
    pairs = [(c, cont) for c in ctxs] + [(ctxs[0], cont[2:]), (ctxs[1], cont[:1])]
    with no_cache_warnings():
        got = [s.logprob for s in LM(engine.model, tok, progress=False).loglikelihoods(pairs)]
    want = [full_loglikelihood(engine.model, c, k) for c, k in pairs]
    base = [full_loglikelihood(base_engine.model, c, k) for c, k in pairs]
    assert got == pytest.approx(want, abs=1e-4)
    assert min(abs(w - b) for w, b in zip(want, base, strict=True)) > 0.05  # the virtual tokens count
    with engine.model.disable_adapter():  # without them, the base model's scores
        alone = [s.logprob for s in LM(engine.model, tok, progress=False).loglikelihoods(pairs)]
    assert alone == pytest.approx(base, abs=1e-4)


def test_generation_is_peft_forward(engine: LocalEngine, base_engine: LocalEngine) -> None:
    tok = engine.tokenizer
    stop = end_of_turn_ids(tok)
    chats = [[Message(role="user", content=t)] for t in TEXTS]
    prompts = [engine.prompt_ids(chat) for chat in chats]
    want = [full_greedy(engine.model, p, stop) for p in prompts]
    assert want != [full_greedy(base_engine.model, p, stop) for p in prompts]  # the virtual tokens count
    texts = [tok.decode(w, skip_special_tokens=True).strip() for w in want]
    params = GenerationParams(max_new_tokens=NEW)
    with no_cache_warnings():
        assert LM(engine.model, tok, progress=False).generate(prompts, NEW) == texts  # eval, compare: left-padded
        assert engine.generate_batch(chats, params) == texts
        assert engine.generate(chats[0], params) == texts[0]
        assert "".join(engine.stream(chats[1], params)).strip() == texts[1]  # the terminal chat
        jobs = [engine.submit(p, params) for p in prompts]  # the server: rows prefilled together and joined
        for job in jobs:
            assert job.done.wait(60)
    engine.batcher().close()
    assert [job.error for job in jobs] == [None] * len(jobs)
    assert [job.tokens for job in jobs] == want
