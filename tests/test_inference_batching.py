"""The batch scheduler (inference.batching) and adapters for inference (merged; several on one base)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tuneforge.config import ModelConfig
from tuneforge.data.schema import Message
from tuneforge.errors import TuneforgeError
from tuneforge.inference import GenerationParams, LocalEngine, engines_for_adapters

QUESTIONS = [
    "hi",
    "What is the capital of France? Tell me.",
    "Translate to French: hello world. And then a few more words, please.",
    "x",
]


def random_lora(base_dir: Path, out: Path, seed: int, targets: list[str]) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():  # large enough to move the logits clearly (PEFT's random init barely does)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def lora_a(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_lora(tiny_model_dir, tmp_path_factory.mktemp("lora-a"), 1, ["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def lora_b(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_lora(tiny_model_dir, tmp_path_factory.mktemp("lora-b"), 2, ["k_proj", "o_proj", "down_proj"])


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> LocalEngine:
    return LocalEngine(ModelConfig(path=str(tiny_model_dir)))


def alone(engine: LocalEngine, ids: list[int], params: GenerationParams) -> list[int]:
    """The request by itself through transformers' own generate: the reference for greedy outputs."""
    x = torch.tensor([ids])
    with torch.inference_mode(), engine.adapter_context(engine.adapter_name):
        out = engine.model.generate(input_ids=x, attention_mask=torch.ones_like(x), **params.kwargs(engine.tokenizer))
    return [int(t) for t in out[0, len(ids) :]]


def prompts(engine: LocalEngine) -> list[list[int]]:
    return [engine.prompt_ids([Message("user", q)]) for q in QUESTIONS]


def test_greedy_in_a_batch_of_mixed_lengths_equals_each_request_alone(engine: LocalEngine) -> None:
    ids = prompts(engine)
    assert len({len(i) for i in ids}) == len(ids)  # every prompt a different length: left padding is exercised
    params = [GenerationParams(max_new_tokens=n) for n in (12, 5, 9, 1)]
    before = engine.batcher().steps, engine.batcher().rows
    jobs = [engine.submit(i, p) for i, p in zip(ids, params, strict=True)]
    for job in jobs:
        assert job.done.wait(60)
    steps, rows = engine.batcher().steps - before[0], engine.batcher().rows - before[1]
    assert rows > steps  # the requests really shared decode steps
    for i, p, job in zip(ids, params, jobs, strict=True):
        assert job.tokens == alone(engine, i, p)
        assert job.finish_reason == ("length" if len(job.tokens) == p.max_new_tokens else "stop")
        text = "".join(job.pieces())
        assert text == engine.tokenizer.decode(job.tokens, skip_special_tokens=True)


def test_a_request_that_arrives_mid_batch_joins_it_and_is_unchanged(engine: LocalEngine) -> None:
    ids = prompts(engine)
    long = GenerationParams(max_new_tokens=40)
    first = engine.submit(ids[2], long)
    deadline = time.monotonic() + 60
    while len(first.tokens) < 3 and not first.done.is_set():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    before = engine.batcher().steps, engine.batcher().rows
    second = engine.submit(ids[0], GenerationParams(max_new_tokens=10))
    assert first.done.wait(60) and second.done.wait(60)
    assert not first.error and not second.error
    assert first.tokens == alone(engine, ids[2], long)
    assert second.tokens == alone(engine, ids[0], GenerationParams(max_new_tokens=10))
    if len(first.tokens) > 12:  # it was still running when the second came (else nothing to join)
        assert engine.batcher().rows - before[1] > engine.batcher().steps - before[0]


def test_a_seeded_sampled_request_repeats_whatever_shares_its_batch(engine: LocalEngine) -> None:
    ids = prompts(engine)
    sampled = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    solo = engine.submit(ids[1], sampled)
    assert solo.done.wait(60)
    mates = [engine.submit(i, GenerationParams(max_new_tokens=10)) for i in ids]
    again = engine.submit(ids[1], sampled)
    other_seed = engine.submit(ids[1], GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=8))
    for job in [*mates, again, other_seed]:
        assert job.done.wait(60)
    assert again.tokens == solo.tokens
    assert other_seed.tokens != solo.tokens  # (10 tokens from a 400-token vocabulary: a clash is not plausible)


def test_a_cancelled_request_stops_and_its_batch_goes_on(engine: LocalEngine) -> None:
    ids = prompts(engine)
    keep = engine.submit(ids[0], GenerationParams(max_new_tokens=30))
    drop = engine.submit(ids[3], GenerationParams(max_new_tokens=200))
    drop.cancel()
    assert drop.done.wait(60) and keep.done.wait(60)
    assert len(drop.tokens) < 200
    assert keep.tokens == alone(engine, ids[0], GenerationParams(max_new_tokens=30))


def logits(engine: LocalEngine, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode(), engine.adapter_context(engine.adapter_name):
        return engine.model(input_ids=torch.tensor([ids])).logits[0].float()


def test_a_single_lora_is_merged_for_inference_with_the_same_logits(tiny_model_dir: Path, lora_a: Path) -> None:
    from peft import PeftModel

    cfg = ModelConfig(path=str(tiny_model_dir))
    unmerged, merged = LocalEngine(cfg, lora_a), LocalEngine(cfg, lora_a, merge_adapter=True)
    assert isinstance(unmerged.model, PeftModel) and not unmerged.merged
    assert merged.merged and not isinstance(merged.model, PeftModel)
    ids = prompts(merged)[1]
    a, b = logits(unmerged, ids), logits(merged, ids)
    assert not torch.allclose(a, logits(LocalEngine(cfg), ids), atol=1e-3)  # the adapter does change the model
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)  # fp32 round-off of W + BA against W x + B(A x)
    params = GenerationParams(max_new_tokens=8)
    runs = {e: [e.submit(i, params) for i in prompts(e)] for e in (unmerged, merged, LocalEngine(cfg))}
    tokens = {e: [j.tokens for j in jobs if j.done.wait(60)] for e, jobs in runs.items()}
    assert tokens[unmerged] == tokens[merged] == [alone(unmerged, i, params) for i in prompts(unmerged)]
    assert tokens[merged] != list(tokens.values())[2]  # the scheduler runs the unmerged one with its adapter on


def test_several_adapters_share_one_base_and_switch_per_request(
    tiny_model_dir: Path, lora_a: Path, lora_b: Path
) -> None:
    cfg = ModelConfig(path=str(tiny_model_dir))
    engines = engines_for_adapters(cfg, {"base": None, "a": lora_a, "b": lora_b})
    assert list(engines) == ["base", "a", "b"]
    assert engines["base"].model is engines["a"].model is engines["b"].model  # one copy of the base
    assert engines["base"].batcher() is engines["b"].batcher()
    separate = {"base": LocalEngine(cfg), "a": LocalEngine(cfg, lora_a), "b": LocalEngine(cfg, lora_b)}
    ids = prompts(engines["a"])
    params = GenerationParams(max_new_tokens=8)
    # submitted interleaved: each adapter's requests run in their own batch, none sees another's adapter
    jobs = [(name, i, engines[name].submit(i, params)) for i in ids[:3] for name in engines]
    for name, i, job in jobs:
        assert job.done.wait(60) and job.error is None
        assert job.tokens == alone(separate[name], i, params), name
    for name in engines:
        torch.testing.assert_close(logits(engines[name], ids[1]), logits(separate[name], ids[1]), rtol=0, atol=1e-5)
    assert not torch.allclose(logits(engines["a"], ids[1]), logits(engines["b"], ids[1]), atol=1e-3)


def test_one_adapter_alone_is_merged_by_engines_for_adapters(tiny_model_dir: Path, lora_a: Path) -> None:
    (only,) = engines_for_adapters(ModelConfig(path=str(tiny_model_dir)), {"a": lora_a}).values()
    assert only.merged


def test_a_missing_serve_extra_is_a_users_error() -> None:
    from tuneforge.serve.app import ServeExtraMissing

    assert issubclass(ServeExtraMissing, TuneforgeError) and issubclass(ServeExtraMissing, ImportError)


@pytest.mark.slow
def test_embedded_model_greedy_in_a_batch_equals_each_request_alone() -> None:
    """The real model (SmolLM2-135M): round-off of a padded batch must not change any greedy token here."""
    engine = LocalEngine(ModelConfig(path="embedded"))
    asks = [
        "What is the capital of France?",
        "Write a short poem about the sea, in four lines.",
        "hi",
        "List three uses of Python.",
    ]
    ids = [engine.prompt_ids([Message("user", q)]) for q in asks]
    params = GenerationParams(max_new_tokens=24)
    jobs = [engine.submit(i, params) for i in ids]
    assert all(j.done.wait(600) for j in jobs)
    assert [j.tokens for j in jobs] == [alone(engine, i, params) for i in ids]
    assert "Paris" in "".join(jobs[0].pieces())
