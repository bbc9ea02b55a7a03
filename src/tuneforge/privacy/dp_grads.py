"""Per-sample gradients for DP-SGD: opacus' hooks on the model as it is, and the run-start check that they are right.

opacus computes per-sample gradients with forward/backward hooks on every module that owns trainable parameters
(its grad samplers for nn.Linear, nn.Embedding, ...; torch.func for any other module type). Two gaps, filled here:

- PEFT keeps the trainable vectors of IA³, VeRA, LoKr, BOFT, HRA and FourierFT in nn.ParameterDict containers
  that are never called, so opacus' hooks on them never fire (the parameters would get no per-sample gradient),
  and DoRA's magnitude module is called with keyword arguments opacus' replay does not see. `PeftGradSampleHooks`
  hooks such a PEFT layer as one unit instead and recomputes its per-sample gradients by torch.func, w.r.t. its
  trainable parameters only (opacus' own functorch fallback would differentiate the frozen base weight too).
- nn.Embedding with a padding_idx: autograd leaves the padding row's gradient at zero, opacus' grad sampler does
  not (it scatters the pad positions' gradients into that row), so with full tuning every sample whose text holds
  the pad token (ChatML's <|im_end|>, SmolLM2's pad) got a per-sample gradient the model never had. Fixed in
  `embedding_grad_sample` (in this class's own sampler table: opacus' global one is left alone).
- RMSNorm: opacus registers a grad sampler for torch's nn.RMSNorm only; transformers' LlamaRMSNorm (and every
  model family's own copy) goes through opacus' per-layer torch.func fallback, chosen over register_grad_sampler
  because no single class covers the families (LN tuning's norm copies are PEFT units, as above).

`check_per_sample_gradients` runs once before training, on the user's own model, because a silent error here
trains with a normal-looking loss and ε but corrupted updates (opacus issue #820, opacus + PEFT LoRA).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tuneforge.privacy.dp import DPError

log = logging.getLogger("tuneforge.privacy")

UNIT = "tuneforge.peft_unit"  # the grad-sampler key of PEFT layers hooked as one unit
CHECK_RTOL = {torch.float32: 1e-3, torch.bfloat16: 3e-2, torch.float16: 3e-2}


def _registered() -> dict[Any, Any]:
    from opacus.grad_sample.grad_sample_module import GradSampleHooks

    return GradSampleHooks.GRAD_SAMPLERS


def is_peft_unit(module: nn.Module) -> bool:
    """A PEFT layer whose trainable parameters opacus' per-module hooks cannot reach (see the module docstring)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return False
    if not isinstance(module, BaseTunerLayer):
        return False
    registered = _registered()
    for inner in module.modules():
        owns = any(p.requires_grad for p in inner.parameters(recurse=False))
        if owns and (isinstance(inner, (nn.ParameterDict, nn.ParameterList)) or type(inner) not in registered):
            return True
    return False


def make_hooks(model: nn.Module) -> Any:
    """opacus' GradSampleHooks on `model` in place (no wrapper: the Trainer, PEFT and saving see the model as it
    is), with PEFT units as above; loss reduction "mean" (the loss is the mean of per-sample losses)."""
    from opacus.grad_sample.grad_sample_module import GradSampleHooks
    from opacus.utils.module_utils import trainable_parameters

    class PeftGradSampleHooks(GradSampleHooks):  # type: ignore[misc]
        def __init__(self, m: nn.Module) -> None:
            self.units = {id(x) for x in m.modules() if is_peft_unit(x)}
            self.GRAD_SAMPLERS = {
                **GradSampleHooks.GRAD_SAMPLERS,
                nn.Embedding: embedding_grad_sample,
                UNIT: self._unit_grad_sample,
            }
            super().__init__(m, batch_first=True, loss_reduction="mean", strict=True)

        def iterate_submodules(self, module: nn.Module) -> Iterator[nn.Module]:
            if id(module) in self.units:
                yield module  # its parameters are the unit's; nothing inside gets hooks of its own
                return
            yield from super().iterate_submodules(module)

        def _get_module_type(self, module: nn.Module) -> Any:
            return UNIT if id(module) in self.units else type(module)

        def capture_activations_hook(self, module: nn.Module, forward_input: Any, output: Any) -> None:
            if id(module) not in self.units:
                return super().capture_activations_hook(module, forward_input, output)
            # opacus' own hook, minus its check that the module owns trainable parameters directly
            if not module.training or not torch.is_grad_enabled() or not self.hooks_enabled:
                return None
            stored: list[Any] = module.__dict__.setdefault("activations", [])  # opacus reads module.activations
            stored.append([t.detach() for t in forward_input])
            for _, p in trainable_parameters(module):
                p._forward_counter += 1
            return None

        def _unit_grad_sample(self, layer: nn.Module, activations: list[Any], backprops: Any) -> dict[Any, Any]:
            return replay_grad_sample(layer, activations[0], backprops)

    return PeftGradSampleHooks(model)


def embedding_grad_sample(layer: nn.Embedding, activations: list[Any], backprops: Any) -> dict[Any, Any]:
    """opacus' nn.Embedding grad sampler, with the padding row's per-sample gradient zeroed as autograd's is."""
    from opacus.grad_sample.embedding import compute_embedding_grad_sample

    out = compute_embedding_grad_sample(layer, activations, backprops)
    if layer.padding_idx is not None and layer.weight in out:
        out[layer.weight][:, layer.padding_idx] = 0
    return out


def _stateless_copy(layer: nn.Module) -> nn.Module:
    """A hook-free copy of `layer` on the meta device, called with the real tensors (opacus' functorch.py does the
    same: the real module's hooks must not fire inside torch.func). Eval mode: no random ops (dropout is 0,
    checked at load, so it computes the same function as the training forward)."""
    cached = layer.__dict__.get("_tuneforge_stateless")
    if cached is not None:
        return cached
    saved = layer.__dict__.pop("activations", None)
    try:
        clone = copy.deepcopy(layer)
    finally:
        if saved is not None:
            layer.activations = saved
    for m in clone.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
            hooks.clear()
    clone.eval().to("meta")
    layer.__dict__["_tuneforge_stateless"] = clone  # not a submodule: invisible to state_dict and .modules()
    return clone


def replay_grad_sample(layer: nn.Module, x: torch.Tensor, backprops: torch.Tensor) -> dict[Any, torch.Tensor]:
    """Per-sample gradients of `layer`'s trainable parameters: vmap over the batch of the gradient of
    <layer(x_i), dL/dy_i>, by torch.func, w.r.t. the trainable parameters only."""
    from torch.func import functional_call, grad, vmap

    clone = _stateless_copy(layer)
    trainable = {n: p for n, p in layer.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in layer.named_parameters() if not p.requires_grad}
    fixed.update({n: b for n, b in layer.named_buffers()})
    dtype = next(iter(trainable.values())).dtype
    if x.is_floating_point() and x.dtype != backprops.dtype:
        x = x.to(backprops.dtype)

    def inner(values: dict[str, torch.Tensor], xi: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
        out = functional_call(clone, {**fixed, **values}, (xi.unsqueeze(0),))
        return (out * gi.unsqueeze(0).to(out.dtype)).sum()

    values = {n: p.detach().to(dtype) for n, p in trainable.items()}
    grads = vmap(grad(inner), in_dims=(None, 0, 0))(values, x, backprops)
    return {trainable[n]: g for n, g in grads.items()}


def check_replayable(model: nn.Module) -> None:
    """Refuse a PEFT unit with active dropout: its replay (eval mode) would not compute the training forward."""
    for name, module in model.named_modules():
        if is_peft_unit(module):
            for inner_name, inner in module.named_modules():
                if isinstance(inner, nn.Dropout) and inner.p > 0:
                    raise DPError(
                        f"{name}.{inner_name}: dropout p={inner.p} in a layer whose per-sample gradients are replayed "
                        "by torch.func (it cannot replay the mask); set the method's dropout to 0"
                    )


@contextmanager
def no_dropout(model: nn.Module) -> Iterator[None]:
    """Every nn.Dropout off for the check: its passes must compute the same function."""
    changed = [(m, m.p) for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    for m, _ in changed:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in changed:
            m.p = p


@contextmanager
def quiet_hooks() -> Iterator[None]:
    """torch notes that full backward hooks fire for module outputs when no input requires grad (token ids never
    do); opacus' grad samplers rely on exactly that, so the note says nothing a user could act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def check_per_sample_gradients(
    model: nn.Module, hooks: Any, loss_fn: Callable[[nn.Module, dict[str, Any]], torch.Tensor], batch: dict[str, Any]
) -> float:
    """opacus' per-sample gradients on `batch` (2 rows or more) against plain autograd, before any training step:
    their mean must equal the batch gradient, and the first row's must equal that row's gradient alone. Returns the
    worst relative error; a DPError names the parameter that fails. Gradients are left cleared."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    dtype = params[0][1].dtype
    rtol = CHECK_RTOL.get(dtype, 3e-2)
    was_training = model.training
    model.train()
    first = {k: v[:1] for k, v in batch.items()}
    try:
        with no_dropout(model), quiet_hooks():
            _clear(params)
            loss_fn(model, batch).mean().backward()
            samples = {n: _flat_grad_sample(n, p) for n, p in params}
            batch_grad = {n: _grad(p) for n, p in params}
            _clear(params)
            hooks.disable_hooks()
            try:
                loss_fn(model, first).mean().backward()
            finally:
                hooks.enable_hooks()
            alone = {n: _grad(p) for n, p in params}
    finally:
        _clear(params)
        model.train(was_training)
    rows = next(iter(samples.values())).shape[0]
    for n, gs in samples.items():
        if gs.shape[0] != rows:
            raise DPError(f"opacus gave {n} per-sample gradients for {gs.shape[0]} rows of a {rows}-row batch")
    worst = max(
        _relative(lambda n: samples[n].mean(0), batch_grad, "their mean differs from the batch gradient", rtol),
        _relative(lambda n: samples[n][0], alone, "row 0's differs from its gradient computed alone", rtol),
    )
    log.info("privacy: per-sample gradients checked against autograd (worst relative error %.2e)", worst)
    return worst


def _relative(got: Callable[[str], torch.Tensor], want: dict[str, torch.Tensor], what: str, rtol: float) -> float:
    diff = sum(float((got(n).float() - w.float()).pow(2).sum()) for n, w in want.items())
    scale = sum(float(w.float().pow(2).sum()) for w in want.values())
    error = math.sqrt(diff) / (math.sqrt(scale) + 1e-12)
    if not error <= rtol:  # also catches nan
        parts = {n: float((got(n).float() - w.float()).norm()) for n, w in want.items()}
        culprit = max(parts, key=lambda n: parts[n])
        raise DPError(
            f"per-sample gradients are wrong on this model and method ({what}: relative error {error:.3g}, worst in "
            f"{culprit}); DP-SGD would train on corrupted updates, so it refuses (opacus issue #820 is one such case)"
        )
    return error


def _flat_grad_sample(name: str, p: torch.Tensor) -> torch.Tensor:
    gs = getattr(p, "grad_sample", None)
    if gs is None:
        raise DPError(
            f"opacus computed no per-sample gradient for {name}: its module is not reachable by opacus' hooks "
            "(a layer type DP-SGD does not support)"
        )
    return torch.cat(gs) if isinstance(gs, list) else gs


def _grad(p: torch.Tensor) -> torch.Tensor:
    return p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)


def _clear(params: Sequence[tuple[str, torch.Tensor]]) -> None:
    for _, p in params:
        p.grad = None
        p.grad_sample = None  # type: ignore[attr-defined]


def check_memory(model: nn.Module, physical_batch: int) -> None:
    """Refuse a run whose per-sample gradients cannot fit: opacus holds batch × trainable parameters of them (twice,
    while clipping), which is what makes full tuning a small-model affair."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    need = 2 * physical_batch * trainable
    if torch.cuda.is_available() and next(model.parameters()).is_cuda:
        free = torch.cuda.mem_get_info()[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    if need > free:
        raise DPError(
            f"per-sample gradients need about {need / 2**30:.1f} GiB ({physical_batch} rows × {trainable / 2**20:.0f} "
            f"MiB of trainable parameters, twice), {free / 2**30:.1f} GiB is free: lower train.batch_size (rows per "
            "pass; train.grad_accum keeps the expected batch) or train fewer parameters (lora)"
        )
    log.info("privacy: per-sample gradients take about %.2f GiB per pass", need / 2**30)


__all__ = [
    "check_memory",
    "check_per_sample_gradients",
    "check_replayable",
    "embedding_grad_sample",
    "is_peft_unit",
    "make_hooks",
    "no_dropout",
    "replay_grad_sample",
]
