"""Counting rules of plan/trainable.py: full-weight methods, LoRA and its relatives, orthogonal and spectral
adapters; each cites the peft layer whose tensors it counts."""

from __future__ import annotations

from tuneforge.config import MethodSection
from tuneforge.plan import PlanError
from tuneforge.plan.adaptation import (
    Adaptation,
    LowRank,
    Target,
    Tensor,
    base_tensor,
    coerce_params,
    linears,
    module_params,
    params_class,
    resolve_targets,
    suffix_match,
    target_linears,
    tied_name,
    unique,
)
from tuneforge.plan.shapes import LAYERS_PATH, Linear, ModelShape

# ----------------------------------------------------------------------------------------- full-weight methods


def count_full(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    tensors = unique([base_tensor(tied_name(shape, p)) for p in shape.skeleton.params])
    base = frozenset(lin.name for lin in shape.skeleton.linears)
    norms = frozenset(n for n, _, _ in shape.skeleton.norms)
    return Adaptation(params.name, "full", tensors, base_trainable=base, norms_trainable=norms)


def count_freeze(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from tuneforge.methods.full import FreezeParams, matches

    p = coerce_params(params, FreezeParams)
    n = shape.layers
    if abs(p.trainable_layers) > n:
        raise PlanError(
            f"method.trainable_layers={p.trainable_layers}: this model has only {n} decoder layers "
            f"(allowed: 1..{n} for the last layers, -1..-{n} for the first)"
        )
    chosen = range(n - p.trainable_layers, n) if p.trainable_layers > 0 else range(-p.trainable_layers)
    sk = shape.skeleton
    modules: list[str] = []
    for i in chosen:
        layer = f"{LAYERS_PATH}.{i}"
        if p.trainable_modules == ["all"]:
            modules.append(layer)
            continue
        inside = [m[len(layer) + 1 :] for m in sk.modules if m.startswith(layer + ".")]
        for pattern in p.trainable_modules:
            hits = [m for m in inside if matches(m, pattern)]
            if not hits:
                raise PlanError(
                    f"method.trainable_modules: {pattern!r} matches no sub-module of a decoder layer; "
                    f"available: {', '.join(sorted(set(inside)))}"
                )
            modules += [f"{layer}.{m}" for m in hits]
    tensors = module_params(shape, modules)
    outside = [m for m in sk.modules if m != LAYERS_PATH and not m.startswith(LAYERS_PATH + ".")]
    for pattern in p.extra_modules:
        hits = [m for m in outside if matches(m, pattern)]
        if not hits:
            raise PlanError(
                f"method.extra_modules: {pattern!r} matches no module outside the decoder layers; available: "
                f"{', '.join(sorted({q.module for q in sk.params if not q.module.startswith(LAYERS_PATH)}))}"
            )
        tensors += [
            base_tensor(tied_name(shape, q))
            for m in hits
            for q in sk.params_under(m)
            if not q.module.startswith(LAYERS_PATH + ".")
        ]
    tensors = unique(tensors)
    names = {t.name for t in tensors}
    base = frozenset(lin.name for lin in sk.linears if f"{lin.name}.weight" in names or _head_tied(shape, lin, names))
    norms = frozenset(m for m, _, _ in sk.norms if f"{m}.weight" in names)
    return Adaptation(params.name, "full", tensors, base_trainable=base, norms_trainable=norms)


def _head_tied(shape: ModelShape, lin: Linear, names: set[str]) -> bool:
    return lin.role == "lm_head" and shape.tied and "model.embed_tokens.weight" in names


def count_low_rank(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    """GaLore / APOLLO: every weight trains; transformers' Trainer picks the projected Linear weights by name
    fragment (optim_target_modules), tuneforge's all-linear giving the decoder layers' linear layers."""
    p = coerce_params(params, params_class(params))
    a = count_full(shape, params, device)
    if p.target_modules == "all-linear":
        chosen = tuple(shape.skeleton.layer_linears())
    else:
        chosen = tuple(lin for lin in shape.skeleton.linears if any(t in lin.name for t in p.target_modules))
        if not chosen:
            raise PlanError(f"method.target_modules={p.target_modules}: no linear layer's name contains any of them")
    proj = getattr(p, "proj_type", "std")
    inner = getattr(p, "optimizer", "adamw")
    a.low_rank = LowRank(chosen, p.rank, proj, inner)
    return a


# ----------------------------------------------------------------------------------------- LoRA and relatives


def count_lora(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from tuneforge.methods.lora import LoraBase
    from tuneforge.methods.qlora import QloraParams

    p = coerce_params(params, params_class(params))
    assert isinstance(p, LoraBase)
    kind = "dora" if p.use_dora else "lora"
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in linears(shape, resolve_targets(shape, p.target_modules, p.name), p.name, embedding_ok=True):
        if isinstance(t, str):  # peft's lora.Embedding: A (r × vocab), B (hidden × r); DoRA: a magnitude per column
            tensors += [Tensor(f"{t}.lora_embedding_A", p.r * shape.vocab, "fp32", True, p.r, shape.vocab)]
            tensors += [Tensor(f"{t}.lora_embedding_B", shape.hidden * p.r, "fp32", True, shape.hidden, p.r)]
            if p.use_dora:
                tensors.append(Tensor(f"{t}.lora_magnitude_vector", shape.hidden, "fp32", True))
            continue
        tensors += [
            Tensor(f"{t.name}.lora_A", p.r * t.in_features, "fp32", True, p.r, t.in_features),
            Tensor(f"{t.name}.lora_B", t.out_features * p.r, "fp32", True, t.out_features, p.r),
        ]
        if p.use_dora:  # peft's DoraLinearLayer: one magnitude per output feature
            tensors.append(Tensor(f"{t.name}.lora_magnitude_vector", t.out_features, "fp32", True))
        targets.append(Target(t, kind, p.r))
    tensors += _lora_bias(shape, p.bias, targets)
    tensors += _saved_copies(shape, p.modules_to_save)
    a = Adaptation(p.name, "lora", tensors, targets=targets)
    if isinstance(p, QloraParams):
        a.quant_bits = p.bits
        a.double_quant = p.double_quant
    return a


def _lora_bias(shape: ModelShape, bias: str, targets: list[Target]) -> list[Tensor]:
    sk = shape.skeleton
    if bias == "all":
        return [base_tensor(q) for q in sk.params if q.name.endswith(".bias")]
    if bias == "lora_only":
        wanted = {f"{t.linear.name}.bias" for t in targets}
        return [base_tensor(q) for q in sk.params if q.name in wanted]
    return []


def _saved_copies(shape: ModelShape, modules: list[str]) -> list[Tensor]:
    """modules_to_save: peft trains a copy of each module whole (the original stays, frozen)."""
    if not modules:
        return []
    found = [m for m in shape.skeleton.modules if any(suffix_match(m, t) for t in modules)]
    missing = [t for t in modules if not any(suffix_match(m, t) for m in found)]
    if missing:
        raise PlanError(f"method.modules_to_save: {', '.join(map(repr, missing))} not found in this model")
    return [
        Tensor(f"{q.name}.modules_to_save", q.numel, "base", True, shape.vocab if "embed" in q.name else 0)
        for m in found
        for q in shape.skeleton.params_under(m)
    ]


def count_adalora(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    r = p.init_r
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in target_linears(shape, p):
        # peft's AdaLoraLayer: lora_A (r × in), lora_E (r × 1), lora_B (out × r); ranknum does not train
        tensors += [
            Tensor(f"{t.name}.lora_A", r * t.in_features, "fp32", True, r, t.in_features),
            Tensor(f"{t.name}.lora_E", r, "fp32", True),
            Tensor(f"{t.name}.lora_B", t.out_features * r, "fp32", True, t.out_features, r),
        ]
        targets.append(Target(t, "adalora", r))
    return Adaptation(p.name, "lora", tensors, targets=targets)


def count_loha(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in target_linears(shape, p):
        # peft's LoHaLayer (Linear): hada_w1_a, hada_w2_a (out × r) and hada_w1_b, hada_w2_b (r × in)
        for pair in ("w1", "w2"):
            tensors.append(Tensor(f"{t.name}.hada_{pair}_a", t.out_features * p.r, "fp32", True, t.out_features, p.r))
            tensors.append(Tensor(f"{t.name}.hada_{pair}_b", p.r * t.in_features, "fp32", True, p.r, t.in_features))
        targets.append(Target(t, "loha", p.r))
    return Adaptation(p.name, "lora", tensors, targets=targets)


def count_lokr(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from peft.tuners.lokr.layer import factorization

    p = coerce_params(params, params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in target_linears(shape, p):
        # peft's LoKrLayer.update_layer: out = a·c, in = b·d; w1 (a × b) or its r-factors, w2 (c × d) or r-factors
        in_m, in_n = factorization(t.in_features, p.decompose_factor)
        out_l, out_k = factorization(t.out_features, p.decompose_factor)
        if p.decompose_both and p.r < max(out_l, in_m) / 2:
            tensors.append(Tensor(f"{t.name}.lokr_w1_ab", p.r * (out_l + in_m), "fp32", True))
        else:
            tensors.append(Tensor(f"{t.name}.lokr_w1", out_l * in_m, "fp32", True, out_l, in_m))
        if p.r < max(out_k, in_n) / 2:
            tensors.append(Tensor(f"{t.name}.lokr_w2_ab", p.r * (out_k + in_n), "fp32", True))
        else:
            tensors.append(Tensor(f"{t.name}.lokr_w2", out_k * in_n, "fp32", True, out_k, in_n))
        targets.append(Target(t, "lokr", p.r))
    return Adaptation(p.name, "lora", tensors, targets=targets)


def count_vera(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    chosen = [
        t for t in linears(shape, resolve_targets(shape, p.target_modules, p.name), p.name) if isinstance(t, Linear)
    ]
    tensors: list[Tensor] = []
    for t in chosen:  # peft's VeraLayer: lambda_b (out), lambda_d (r) train
        tensors += [Tensor(f"{t.name}.vera_lambda_b", t.out_features, "fp32", True)]
        tensors += [Tensor(f"{t.name}.vera_lambda_d", p.r, "fp32", True)]
    # one shared frozen pair, sized for the widest target: vera_A (r × max in), vera_B (max out × r)
    widest_in = max(t.in_features for t in chosen)
    widest_out = max(t.out_features for t in chosen)
    buffers = [Tensor("vera_A", p.r * widest_in, "fp32", True), Tensor("vera_B", widest_out * p.r, "fp32", True)]
    return Adaptation(p.name, "lora", tensors, buffers, targets=[Target(t, "vera", p.r) for t in chosen])


# ------------------------------------------------------------------------------------- orthogonal, spectral


def count_oft(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in target_linears(shape, p):
        block = _oft_block(t.in_features, p.block_size)
        blocks = 1 if p.block_share else t.in_features // block
        # peft's OFTRotationModule: weight (blocks × b(b-1)/2), the strict upper triangle of each skew block
        tensors.append(Tensor(f"{t.name}.oft_R", blocks * block * (block - 1) // 2, "fp32", True))
        targets.append(Target(t, "oft", block))
    return Adaptation(p.name, "other", tensors, targets=targets)


def _oft_block(in_features: int, wanted: int) -> int:
    """peft's OFTLayer.adjust_oft_parameters: the divisor of in_features nearest the asked block size."""
    if wanted >= in_features:
        return in_features
    higher = wanted
    while higher <= in_features and in_features % higher:
        higher += 1
    lower = wanted
    while lower > 1 and in_features % lower:
        lower -= 1
    return lower if wanted - lower <= higher - wanted else higher


def count_boft(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    # peft's BOFTLayer forces one butterfly factor unless its CUDA extension builds (never on a CPU)
    factors = p.n_butterfly_factor if device == "gpu" else 1
    tensors: list[Tensor] = []
    buffers: list[Tensor] = []
    targets: list[Target] = []
    for t in target_linears(shape, p):
        if t.in_features % p.block_size:
            raise PlanError(
                f"method boft: in_features ({t.in_features}) of {t.name} must be divisible by "
                f"block_size ({p.block_size})"
            )
        blocks = t.in_features // p.block_size
        # boft_R (factors × blocks × b × b), boft_s (out × 1); a permutation buffer boft_P (factors × in × in)
        tensors.append(Tensor(f"{t.name}.boft_R", factors * blocks * p.block_size**2, "fp32", True))
        tensors.append(Tensor(f"{t.name}.boft_s", t.out_features, "fp32", True))
        buffers.append(Tensor(f"{t.name}.boft_P", factors * t.in_features**2, "fp32", True))
        targets.append(Target(t, "boft", p.block_size, factors))
    if device != "gpu" and p.n_butterfly_factor != 1:
        notes = [f"boft: peft uses 1 butterfly factor without its CUDA extension (asked {p.n_butterfly_factor})"]
    else:
        notes = []
    return Adaptation(p.name, "other", tensors, buffers, targets=targets, notes=notes)


def count_hra(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in target_linears(shape, p):
        tensors.append(Tensor(f"{t.name}.hra_u", t.in_features * p.r, "fp32", True, t.in_features, p.r))
        targets.append(Target(t, "hra", p.r))
    return Adaptation(p.name, "other", tensors, targets=targets)


def count_fourierft(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    tensors: list[Tensor] = []
    buffers: list[Tensor] = []
    targets: list[Target] = []
    for t in target_linears(shape, p):
        if p.n_frequency > t.in_features * t.out_features:
            raise PlanError(
                f"method.n_frequency={p.n_frequency} exceeds in × out = {t.in_features * t.out_features} of {t.name}"
            )
        tensors.append(Tensor(f"{t.name}.fourierft_spectrum", p.n_frequency, "fp32", True))
        buffers.append(Tensor(f"{t.name}.indices", p.n_frequency * 4, "fp32", True))  # 2 × n int64 = 4n fp32-sized
        targets.append(Target(t, "fourierft", p.n_frequency))
    return Adaptation(p.name, "other", tensors, buffers, targets=targets)
