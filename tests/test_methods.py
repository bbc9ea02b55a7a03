"""The method × tiny-model matrix: training changes what should change and nothing else, parameter counts are
right, save → load reproduces the logits, the adapter loads with plain PEFT, and merging changes no output."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tuneforge.config import MethodSection, ModelConfig
from tuneforge.methods import (
    METHODS,
    FreezeParams,
    FullParams,
    LoraParams,
    MethodError,
    apply_method,
    count_parameters,
    load_trained,
    merge,
    save_trained,
)
from tuneforge.models.loader import load_model, load_tokenizer

R = 4


def _layer_numel(model: Any, index: int, sub: str | None = None) -> int:
    layer = model.model.layers[index]
    module = layer.get_submodule(sub) if sub else layer
    return sum(p.numel() for p in module.parameters())


def _lora_numel(model: Any, dora: bool = False) -> int:
    # all-linear: every Linear inside the decoder layers (the output head is excluded by PEFT).
    linear = [m for name, m in model.named_modules() if ".layers." in name and isinstance(m, nn.Linear)]
    return sum(R * (m.in_features + m.out_features) + (m.out_features if dora else 0) for m in linear)


def _qv_numel(m: Any) -> int:
    attn = [layer.self_attn for layer in m.model.layers]
    return sum(R * (p.in_features + p.out_features) for a in attn for p in (a.q_proj, a.v_proj))


@dataclass(frozen=True)
class Case:
    id: str
    params: MethodSection
    expected_trainable: Callable[[Any], int]  # from the untouched base model


CASES = [
    Case("full", FullParams(), lambda m: count_parameters(m)[1]),
    Case("freeze-last-1", FreezeParams(trainable_layers=1), lambda m: _layer_numel(m, -1)),
    Case(
        "freeze-first-1-mlp",
        FreezeParams(trainable_layers=-1, trainable_modules=["mlp"]),
        lambda m: _layer_numel(m, 0, "mlp"),
    ),
    Case(
        "freeze-last-1-qproj+norm",
        FreezeParams(trainable_layers=1, trainable_modules=["self_attn.q_proj"], extra_modules=["norm"]),
        lambda m: _layer_numel(m, -1, "self_attn.q_proj") + m.model.norm.weight.numel(),
    ),
    Case("lora", LoraParams(r=R), _lora_numel),
    Case("lora-qv", LoraParams(r=R, target_modules=["q_proj", "v_proj"]), _qv_numel),
    Case("dora", LoraParams(r=R, use_dora=True), lambda m: _lora_numel(m, dora=True)),
    Case("rslora", LoraParams(r=R, use_rslora=True), _lora_numel),
    Case("pissa", LoraParams(r=R, init="pissa"), _lora_numel),
    Case("pissa-niter", LoraParams(r=R, init="pissa_niter_2"), _lora_numel),
    Case("olora", LoraParams(r=R, init="olora"), _lora_numel),
    Case("lora-gaussian", LoraParams(r=R, init="gaussian"), _lora_numel),
]
MODELS = ["tiny_model_dir", "tiny_llama3_dir"]


def _load(folder: Path) -> tuple[Any, Any]:
    cfg = ModelConfig(path=str(folder))
    tokenizer = load_tokenizer(cfg)
    return load_model(cfg, tokenizer), tokenizer


def _batch(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (2, 10), generator=g)


def _train_two_steps(model: Any, ids: torch.Tensor) -> list[float]:
    model.train()
    # No weight decay: a parameter may only change through its gradient, so "changed" means "trained".
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model.eval()(input_ids=ids).logits


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture(params=MODELS)
def tiny_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(request.param)


@pytest.fixture
def trained(case: Case, tiny_dir: Path) -> dict[str, Any]:
    """Apply the case's method, train two steps, and keep everything the assertions need."""
    base, tokenizer = _load(tiny_dir)
    expected = case.expected_trainable(base)
    ids = _batch(len(tokenizer))
    base_logits = _logits(base, ids)
    model = apply_method(base, case.params)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = _train_two_steps(model, ids)
    return {
        "model": model,
        "tokenizer": tokenizer,
        "ids": ids,
        "before": before,
        "losses": losses,
        "expected": expected,
        "base_logits": base_logits,
        "logits": _logits(model, ids),
    }


def test_training_changes_trainable_and_only_trainable(trained: dict[str, Any]) -> None:
    assert all(math.isfinite(x) for x in trained["losses"])
    changed = {n for n, p in trained["model"].named_parameters() if not torch.equal(p, trained["before"][n])}
    trainable = {n for n, p in trained["model"].named_parameters() if p.requires_grad}
    assert trainable, "nothing is trainable"
    assert changed == trainable  # every trainable tensor moved; every frozen one is bit-for-bit the same


def test_parameter_counts(trained: dict[str, Any]) -> None:
    trainable, total = count_parameters(trained["model"])
    assert trainable == trained["expected"]
    n_trainable = sum(p.numel() for p in trained["model"].parameters() if p.requires_grad)
    assert trainable == n_trainable
    assert total == sum(p.numel() for p in trained["model"].parameters())


def test_save_then_load_reproduces_logits(
    trained: dict[str, Any], case: Case, tiny_dir: Path, tmp_path: Path
):
    # The trained model must differ from the base, or an empty save would pass the round trip.
    assert not torch.allclose(trained["logits"], trained["base_logits"], atol=1e-4)
    out = save_trained(trained["model"], case.params, tmp_path / "out", trained["tokenizer"])
    kind = METHODS[case.params.name].output
    assert (out / ("adapter_model.safetensors" if kind == "adapter" else "model.safetensors")).is_file()
    assert (out / "tokenizer_config.json").is_file()
    fresh_base, _ = _load(tiny_dir)  # untouched: PiSSA/OLoRA adapters must have been converted for it
    reloaded = load_trained(fresh_base if kind == "adapter" else None, out)
    torch.testing.assert_close(_logits(reloaded, trained["ids"]), trained["logits"], atol=1e-5, rtol=0)


def test_merge_matches_unmerged(trained: dict[str, Any], case: Case) -> None:
    if not METHODS[case.params.name].mergeable:
        with pytest.raises(MethodError, match="nothing to merge"):
            merge(trained["model"])
        return
    merged = merge(trained["model"])
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, trained["ids"]), trained["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("init", ["default", "pissa", "olora"])
def test_adapter_loads_with_plain_peft(tiny_model_dir: Path, tmp_path: Path, init: str) -> None:
    from peft import PeftModel

    base, tokenizer = _load(tiny_model_dir)
    params = LoraParams(r=R, init=init)
    ids = _batch(len(tokenizer))
    model = apply_method(base, params)
    _train_two_steps(model, ids)
    want = _logits(model, ids)
    out = save_trained(model, params, tmp_path / "adapter", tokenizer)
    config = json.loads((out / "adapter_config.json").read_text())
    # A converted PiSSA/OLoRA adapter is a plain LoRA of rank 2r relative to the original weights.
    assert config["r"] == (R if init == "default" else 2 * R)
    assert config["init_lora_weights"] is True
    from transformers import AutoModelForCausalLM

    untouched = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = PeftModel.from_pretrained(untouched, str(out))
    torch.testing.assert_close(_logits(peft_model, ids), want, atol=1e-5, rtol=0)


def test_tied_embeddings_counted_once(tiny_model_dir: Path, tiny_llama3_dir: Path) -> None:
    tied, _ = _load(tiny_model_dir)
    untied, _ = _load(tiny_llama3_dir)
    head = untied.lm_head.weight.numel()
    assert count_parameters(untied)[1] - count_parameters(tied)[1] == head


def test_freeze_extra_lm_head_follows_tying(tiny_model_dir: Path, tiny_llama3_dir: Path) -> None:
    params = FreezeParams(trainable_layers=1, extra_modules=["lm_head"])
    tied = apply_method(_load(tiny_model_dir)[0], params)
    untied = apply_method(_load(tiny_llama3_dir)[0], params)
    assert tied.model.embed_tokens.weight.requires_grad  # one tensor with lm_head
    assert not untied.model.embed_tokens.weight.requires_grad
    assert untied.lm_head.weight.requires_grad
    assert not untied.model.layers[0].mlp.up_proj.weight.requires_grad
