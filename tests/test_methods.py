"""The method × tiny-model matrix: training changes what should change and nothing else, parameter counts are
right, save → load reproduces the logits, merging changes no output, and PEFT adapters load with plain PEFT.

Each (method case, model) pair is trained once per module (the `trained` fixture is module-scoped) and the
assertions share it; tests that alter the model work on a copy.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.tiny import build_tokenizer
from tuneforge.config import MethodSection, ModelConfig
from tuneforge.methods import (
    METHODS,
    FreezeParams,
    FullParams,
    LoraParams,
    MethodError,
    apply_method,
    build_optimizer,
    count_parameters,
    load_trained,
    merge,
    method_callbacks,
    model_load_kwargs,
    save_trained,
)
from tuneforge.methods.adapters import Ia3Params, LnTuningParams
from tuneforge.methods.bitfit import BitfitParams
from tuneforge.methods.bottleneck import ParallelAdapterParams, SeriesAdapterParams
from tuneforge.methods.lora import DoraParams, LoraPlusParams, OloraParams, PissaParams, RsLoraParams
from tuneforge.methods.lora_variants import AdaLoraParams, LohaParams, LokrParams, VeraParams
from tuneforge.methods.optim import ApolloParams, GaloreParams
from tuneforge.methods.orthogonal import BoftParams, FourierFtParams, HraParams, OftParams
from tuneforge.methods.prompt import MptParams, PrefixTuningParams, PromptTuningParams, PTuningParams, PTuningV2Params
from tuneforge.methods.qlora import QloraParams, keep_cpu_weights_trainable
from tuneforge.models.loader import load_model, load_tokenizer

R = 4
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
HAS_GALORE = importlib.util.find_spec("galore_torch") is not None
HAS_APOLLO = importlib.util.find_spec("apollo_torch") is not None


def _linear(model: Any) -> list[nn.Linear]:
    # all-linear: every Linear inside the decoder layers (the output head is excluded by PEFT).
    return [m for name, m in model.named_modules() if ".layers." in name and isinstance(m, nn.Linear)]


def _layer_numel(model: Any, index: int, sub: str | None = None) -> int:
    layer = model.model.layers[index]
    module = layer.get_submodule(sub) if sub else layer
    return sum(p.numel() for p in module.parameters())


def _lora_numel(model: Any, dora: bool = False) -> int:
    return sum(R * (m.in_features + m.out_features) + (m.out_features if dora else 0) for m in _linear(model))


def _qv_numel(m: Any) -> int:
    attn = [layer.self_attn for layer in m.model.layers]
    return sum(R * (p.in_features + p.out_features) for a in attn for p in (a.q_proj, a.v_proj))


def _bottleneck_numel(model: Any, places: int, size: int = 8) -> int:
    return len(model.model.layers) * places * 2 * model.config.hidden_size * size


def _ia3_numel(model: Any) -> int:
    # Llama defaults: k_proj and v_proj outputs, down_proj input.
    layers = model.model.layers
    return sum(a.self_attn.k_proj.out_features + a.self_attn.v_proj.out_features for a in layers) + sum(
        a.mlp.down_proj.in_features for a in layers
    )


def _norm_numel(model: Any) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "norm" in n)


def _oft_numel(model: Any, block: int = 8) -> int:
    # One skew-symmetric block per `block` input features, stored as its upper triangle.
    return sum(m.in_features // block * block * (block - 1) // 2 for m in _linear(model))


PEFT_COUNT = None  # expected trainable count: PEFT's own get_nb_trainable_parameters()
BOTH = ("tiny_model_dir", "tiny_llama3_dir")
ONE = ("tiny_model_dir",)
WIDE = ("tiny_wide_dir",)  # bitsandbytes' CPU 4-bit kernel needs layers at least 64 wide


@dataclass(frozen=True)
class Case:
    id: str
    params: MethodSection
    expected_trainable: Callable[[Any], int] | None  # from the untouched base model
    models: tuple[str, ...] = BOTH
    needs: bool = True  # the optional package the method needs is installed
    # Quantised kernels: plain PEFT on a fresh 4-bit base uses bitsandbytes' packed CPU kernel (see qlora.py),
    # LLM.int8 quantises activations too, and a merged model is dequantised: close to the trained logits, not equal.
    quant_atol: float = 1e-5


CASES = [
    Case("full", FullParams(), lambda m: count_parameters(m)[1]),
    Case("freeze-last-1", FreezeParams(trainable_layers=1), lambda m: _layer_numel(m, -1)),
    Case(
        "freeze-first-1-mlp",
        FreezeParams(trainable_layers=-1, trainable_modules=["mlp"]),
        lambda m: _layer_numel(m, 0, "mlp"),
        ONE,
    ),
    Case(
        "freeze-last-1-qproj+norm",
        FreezeParams(trainable_layers=1, trainable_modules=["self_attn.q_proj"], extra_modules=["norm"]),
        lambda m: _layer_numel(m, -1, "self_attn.q_proj") + m.model.norm.weight.numel(),
        ONE,
    ),
    Case("galore", GaloreParams(rank=4, update_proj_gap=1), lambda m: count_parameters(m)[1], ONE, HAS_GALORE),
    Case("apollo", ApolloParams(rank=4, update_proj_gap=1), lambda m: count_parameters(m)[1], ONE, HAS_APOLLO),
    Case("lora", LoraParams(r=R), _lora_numel),
    Case("lora-qv", LoraParams(r=R, target_modules=["q_proj", "v_proj"]), _qv_numel, ONE),
    Case("dora", DoraParams(r=R), lambda m: _lora_numel(m, dora=True)),
    Case("rslora", RsLoraParams(r=R), _lora_numel, ONE),
    Case("pissa", PissaParams(r=R), _lora_numel),
    Case("pissa-niter", LoraParams(r=R, init="pissa_niter_2"), _lora_numel, ONE),
    Case("olora", OloraParams(r=R), _lora_numel, ONE),
    Case("lora-gaussian", LoraParams(r=R, init="gaussian"), _lora_numel, ONE),
    Case("lora_plus", LoraPlusParams(r=R, lr_ratio=4), _lora_numel, ONE),
    Case("qlora-4bit", QloraParams(r=R), _lora_numel, WIDE, HAS_BNB, quant_atol=1e-2),
    Case("qlora-8bit", QloraParams(r=R, bits=8), _lora_numel, WIDE, HAS_BNB, quant_atol=1e-2),
    # Ranks stay whole for these two steps (tinit); test_adalora_allocates_ranks covers the pruning.
    Case("adalora", AdaLoraParams(init_r=R, target_r=2, tinit=2, total_step=10), PEFT_COUNT, ONE),
    Case("loha", LohaParams(r=R), lambda m: 2 * _lora_numel(m), ONE),
    Case("lokr", LokrParams(r=R), PEFT_COUNT, ONE),
    Case("vera", VeraParams(r=8), lambda m: sum(8 + x.out_features for x in _linear(m)), ONE),
    Case("prompt_tuning", PromptTuningParams(num_virtual_tokens=4), lambda m: 4 * m.config.hidden_size),
    Case(
        "prompt_tuning-text", PromptTuningParams(init="text", init_text="You are a helpful assistant"), PEFT_COUNT, ONE
    ),
    Case("p_tuning", PTuningParams(num_virtual_tokens=4), PEFT_COUNT, ONE),
    Case("p_tuning-lstm", PTuningParams(num_virtual_tokens=4, encoder="lstm"), PEFT_COUNT, ONE),
    Case("prefix_tuning", PrefixTuningParams(num_virtual_tokens=4), PEFT_COUNT, ONE),
    Case("p_tuning_v2", PTuningV2Params(num_virtual_tokens=4), PEFT_COUNT),
    Case("mpt", MptParams(num_virtual_tokens=4, num_tasks=2, task_id=1), PEFT_COUNT, ONE),
    Case("ia3", Ia3Params(), _ia3_numel),
    Case("ln_tuning", LnTuningParams(), _norm_numel, ONE),
    Case("bitfit", BitfitParams(), lambda m: sum(x.out_features for x in _linear(m))),
    Case("series_adapter", SeriesAdapterParams(bottleneck_size=8), lambda m: _bottleneck_numel(m, 2)),
    Case(
        "series_adapter-mlp-relu-learned",
        SeriesAdapterParams(bottleneck_size=8, placement=["mlp"], non_linearity="relu", learned_scaling=True),
        lambda m: _bottleneck_numel(m, 1) + len(m.model.layers),
        ONE,
    ),
    Case("parallel_adapter", ParallelAdapterParams(bottleneck_size=8), lambda m: _bottleneck_numel(m, 1)),
    Case(
        "parallel_adapter-attn",
        ParallelAdapterParams(bottleneck_size=8, placement=["attn"]),
        lambda m: _bottleneck_numel(m, 1),
        ONE,
    ),
    Case("oft", OftParams(block_size=8), _oft_numel, ONE),
    Case("boft", BoftParams(), PEFT_COUNT, ONE),
    Case("hra", HraParams(r=R), lambda m: sum(R * x.in_features for x in _linear(m)), ONE),
    Case("fourierft", FourierFtParams(n_frequency=64), lambda m: 64 * len(_linear(m)), ONE),
]
PAIRS = [(c, m) for c in CASES for m in c.models]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny tensors: a second thread only adds overhead, and on a busy 2-core machine it costs ×5."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_wide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model 64 wide: bitsandbytes quantises in blocks of 64 weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer("chatml")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-wide")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _load(folder: Path, params: MethodSection | None = None) -> tuple[Any, Any]:
    cfg = ModelConfig(path=str(folder))
    tokenizer = load_tokenizer(cfg)
    kwargs = model_load_kwargs(params) if params is not None else {}
    return load_model(cfg, tokenizer, **kwargs), tokenizer


def _batch(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (2, 10), generator=g)


def train_two_steps(model: Any, params: MethodSection, ids: torch.Tensor, lr: float = 1e-2) -> list[float]:
    """Two optimiser steps the way Trainer drives a method: its optimiser hook, then its callbacks'
    on_train_begin / on_optimizer_step (before the gradients are zeroed)."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    # No weight decay: a parameter may only change through its gradient, so "changed" means "trained".
    args = TrainingArguments(output_dir="unused", learning_rate=lr, weight_decay=0.0, max_steps=2, report_to=[])
    optimizer = build_optimizer(model, params, args) or torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
    )
    callbacks = method_callbacks(model, params)
    state, control = TrainerState(max_steps=2), TrainerControl()
    for cb in callbacks:
        cb.on_train_begin(args, state, control)
    model.train()
    losses = []
    for step in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        state.global_step = step
        for cb in callbacks:
            cb.on_optimizer_step(args, state, control)
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    # Prompt tuning and P-tuning return logits for the virtual tokens too; compare the real positions only.
    return model.eval()(input_ids=ids).logits[:, -ids.shape[1] :]


@pytest.fixture(scope="module", params=PAIRS, ids=[f"{c.id}-{m.removesuffix('_dir')}" for c, m in PAIRS])
def pair(request: pytest.FixtureRequest) -> tuple[Case, Path]:
    case, model = request.param
    if not case.needs:
        pytest.skip(f"{case.id}: its optional package is not installed")
    return case, request.getfixturevalue(model)


@pytest.fixture(scope="module")
def trained(pair: tuple[Case, Path]) -> dict[str, Any]:
    """Apply the case's method, train two steps, and keep everything the assertions need."""
    case, folder = pair
    base, tokenizer = _load(folder, case.params)
    if isinstance(case.params, QloraParams):
        keep_cpu_weights_trainable(base)  # as apply does, before the base-logits forward (see qlora.py)
    expected = case.expected_trainable(base) if case.expected_trainable else None
    ids = _batch(len(tokenizer))
    base_logits = _logits(base, ids)
    model = apply_method(base, case.params)
    adapted_logits = _logits(model, ids)
    if expected is None:
        expected = model.get_nb_trainable_parameters()[0]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = train_two_steps(model, case.params, ids)
    return {
        "model": model,
        "tokenizer": tokenizer,
        "ids": ids,
        "before": before,
        "losses": losses,
        "expected": expected,
        "base_logits": base_logits,
        "adapted_logits": adapted_logits,
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
    assert trainable == sum(p.numel() for p in trained["model"].parameters() if p.requires_grad)
    assert 0 < trainable <= total


def test_untrained_method_leaves_the_output_unchanged(trained: dict[str, Any], pair: tuple[Case, Path]) -> None:
    """Every method but the prompt family starts as the base model: zero-initialised up-projections
    (adapters, LoRA's B), identity rotations, unit scalings, or a base rewritten to compensate (PiSSA)."""
    case = pair[0]
    # FourierFT starts from random spectral coefficients (PEFT's default, as in its paper).
    if METHODS[case.params.name].family == "prompt" or case.id in ("lora-gaussian", "fourierft"):
        pytest.skip("this method's initialisation changes the output (by design)")
    torch.testing.assert_close(trained["adapted_logits"], trained["base_logits"], atol=case.quant_atol, rtol=0)


def test_save_then_load_reproduces_logits(trained: dict[str, Any], pair: tuple[Case, Path], tmp_path: Path):
    case, folder = pair
    # The trained model must differ from the base, or an empty save would pass the round trip.
    assert not torch.allclose(trained["logits"], trained["base_logits"], atol=1e-4)
    out = save_trained(trained["model"], case.params, tmp_path / "out", trained["tokenizer"])
    kind = METHODS[case.params.name].output
    assert (out / ("adapter_model.safetensors" if kind == "adapter" else "model.safetensors")).is_file()
    assert (out / "tokenizer_config.json").is_file()
    # Untouched (PiSSA/OLoRA adapters must have been converted for it), quantised again for QLoRA.
    fresh_base, _ = _load(folder, case.params)
    reloaded = load_trained(fresh_base if kind == "adapter" else None, out)
    torch.testing.assert_close(_logits(reloaded, trained["ids"]), trained["logits"], atol=1e-5, rtol=0)
    if (out / "adapter_config.json").is_file():
        _check_plain_peft(case, folder, out, trained)


def _check_plain_peft(case: Case, folder: Path, out: Path, trained: dict[str, Any]) -> None:
    """A PEFT-method adapter loads with nothing but transformers + peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    untouched = AutoModelForCausalLM.from_pretrained(str(folder), **model_load_kwargs(case.params))
    peft_model = PeftModel.from_pretrained(untouched, str(out))
    ids = trained["ids"]
    kwargs: dict[str, Any] = {}
    if isinstance(case.params, MptParams):  # plain PEFT needs the task of each row
        kwargs["task_ids"] = torch.full((ids.shape[0],), case.params.task_id)
    with torch.no_grad():
        logits = peft_model.eval()(input_ids=ids, **kwargs).logits[:, -ids.shape[1] :]
    torch.testing.assert_close(logits, trained["logits"], atol=case.quant_atol, rtol=0)


def test_merge_matches_unmerged(trained: dict[str, Any], pair: tuple[Case, Path]) -> None:
    case = pair[0]
    model = copy.deepcopy(trained["model"])
    if not METHODS[case.params.name].mergeable:
        with pytest.raises(MethodError, match=r"nothing to merge|cannot be merged"):
            merge(model)
        return
    merged = merge(model)
    from peft import PeftModel

    assert not isinstance(merged, PeftModel)
    assert not any(tag in n for n, _ in merged.named_parameters() for tag in ("lora_", "base_layer"))
    torch.testing.assert_close(_logits(merged, trained["ids"]), trained["logits"], atol=case.quant_atol, rtol=0)


@pytest.mark.parametrize("init", ["default", "pissa", "olora"])
def test_pissa_olora_adapters_are_converted_for_the_original_base(
    tiny_model_dir: Path, tmp_path: Path, init: str
) -> None:
    base, tokenizer = _load(tiny_model_dir)
    params = LoraParams(r=R, init=init)
    model = apply_method(base, params)
    train_two_steps(model, params, _batch(len(tokenizer)))
    out = save_trained(model, params, tmp_path / "adapter", tokenizer)
    config = json.loads((out / "adapter_config.json").read_text())
    # A converted PiSSA/OLoRA adapter is a plain LoRA of rank 2r relative to the original weights.
    assert config["r"] == (R if init == "default" else 2 * R)
    assert config["init_lora_weights"] is True


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


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
def test_qlora_trains_after_an_evaluation_of_the_quantised_base(tiny_wide_dir: Path) -> None:
    """An eval-mode forward makes bitsandbytes pack 4-bit weights for its CPU kernel, which has no backward;
    applying qlora afterwards must still give every adapter a gradient."""
    params = QloraParams(r=R)
    base, tokenizer = _load(tiny_wide_dir, params)
    ids = _batch(len(tokenizer))
    _logits(base, ids)  # e.g. a before/after comparison on the same model object
    model = apply_method(base, params)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_two_steps(model, params, ids)
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_qlora_releases_the_memory_mapped_fp32_checkpoint(tiny_wide_dir: Path) -> None:
    """After quantising, no tensor may point into the safetensors mapping (its pages would stay resident)."""
    params = QloraParams(r=R)
    base, tokenizer = _load(tiny_wide_dir, params)

    def mapped() -> bool:
        return any(str(tiny_wide_dir) in line for line in Path("/proc/self/maps").read_text().splitlines())

    ids = _batch(len(tokenizer))
    want = _logits(base, ids)
    tied = base.get_output_embeddings().weight is base.get_input_embeddings().weight
    model = apply_method(base, params)
    assert not mapped(), "the fp32 checkpoint is still memory-mapped after apply"
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    with model.disable_adapter():
        quantised = _logits(model, ids)
    # A fresh LoRA adds exactly nothing: same kernel path on both sides, so fp32 round-off only.
    torch.testing.assert_close(_logits(model, ids), quantised, atol=1e-5, rtol=0)
    # Preparing the model keeps the quantised function, but the kernel path may change under it: on AVX512-BF16 /
    # AMX CPUs bitsandbytes repacks 4-bit weights for a kernel that computes in bfloat16 (2.3e-3 seen on a Xeon
    # with AMX). The tolerance is bfloat16's precision at the logits' scale, not an fp32 figure.
    tol = torch.finfo(torch.bfloat16).eps * want.abs().max().item()
    torch.testing.assert_close(quantised, want, atol=tol, rtol=0)


def test_adalora_allocates_ranks_and_the_pruned_adapter_reloads(tiny_model_dir: Path, tmp_path: Path) -> None:
    # total_step comes from the trainer (2 steps): the budget phase ends at once and masks ranks.
    params = AdaLoraParams(init_r=R, target_r=1)
    base, tokenizer = _load(tiny_model_dir)
    ids = _batch(len(tokenizer))
    model = apply_method(base, params)
    train_two_steps(model, params, ids)
    config = model.peft_config["default"]
    assert config.total_step == 2
    assert config.rank_pattern, "the rank allocator never ran"
    want = _logits(model, ids)
    out = save_trained(model, params, tmp_path / "adalora", tokenizer)
    reloaded = load_trained(_load(tiny_model_dir)[0], out)
    torch.testing.assert_close(_logits(reloaded, ids), want, atol=1e-5, rtol=0)
