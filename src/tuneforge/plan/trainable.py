"""What each method of the METHODS table trains and adds, counted from the model's shapes as peft counts it.

Each family function reads the method's own params model (validated by the table's class, so a bad setting is
the same error as in training) and resolves `target_modules` by peft's rules on the skeleton of `shapes.py`:
`all-linear` is every Linear but the output head, a list entry matches a module whose name is it or ends in
`.<entry>`. The tensor shapes follow peft 0.18+'s layers (cited per family); tests/test_plan.py compares every
count with peft's `get_nb_trainable_parameters()` (or, for tuneforge's own methods, the parameters left
trainable by `apply_method`) on the tiny models of tests/tiny.py, for every method of the table.

peft writes by hand none of this for a model it has not loaded: a planner for a 70B model cannot build it, so the
counting is repeated here from the same shapes; where peft has a helper that needs no model (LoKr's
factorisation, the default target modules per architecture) it is called directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tuneforge.config import MethodSection
from tuneforge.plan import PlanError
from tuneforge.plan.shapes import LAYERS_PATH, Linear, ModelShape, Param

DType = Literal["base", "fp32"]  # base: the model's weight dtype; fp32: peft adapters (peft upcasts them)


@dataclass(frozen=True)
class Tensor:
    name: str
    numel: int
    dtype: DType
    new: bool  # added by the method (adapter, copy) rather than a weight of the base model
    rows: int = 0  # 2-D shape where it matters (8-bit / factored optimiser states); 0: a vector
    cols: int = 0


@dataclass(frozen=True)
class Target:
    """An adapter on one linear layer: what the activation and FLOP models need to know of it."""

    linear: Linear
    kind: str  # lora | dora | adalora | loha | lokr | vera | oft | boft | hra | fourierft | ia3_out | ia3_in
    rank: int = 0  # r (LoRA family, VeRA, HRA); the block size (OFT, BOFT); n_frequency (FourierFT)
    factors: int = 1  # BOFT: butterfly factors used


@dataclass(frozen=True)
class Bottleneck:
    layer: int
    place: str  # attn | mlp
    size: int
    activation: str
    learned: bool
    series: bool


@dataclass(frozen=True)
class LowRank:
    """GaLore / APOLLO: optimiser states of these weights live in a rank-`rank` projection."""

    weights: tuple[Linear, ...]
    rank: int
    proj_type: str
    inner: str  # adamw | adafactor | adamw_8bit


@dataclass
class Adaptation:
    method: str
    family: str
    trainable: list[Tensor]
    buffers: list[Tensor] = field(default_factory=list)  # frozen additions: projections, permutations, copies
    targets: list[Target] = field(default_factory=list)
    base_trainable: frozenset[str] = frozenset()  # linear layers whose own weight trains
    norms_trainable: frozenset[str] = frozenset()
    grad_below: bool = False  # gradients reach the input embeddings (prompts, embedding trains, input grads)
    first_trainable: tuple[int, int] | None = None  # (layer, 0 attn / 1 mlp) of the lowest trained part
    virtual_tokens: int = 0  # prepended to every sequence (prompt tuning, P-tuning, MPT)
    prefix_tokens: int = 0  # prefix keys/values in every attention layer (prefix tuning, P-tuning v2)
    bottlenecks: list[Bottleneck] = field(default_factory=list)
    quant_bits: int | None = None
    double_quant: bool = True
    low_rank: LowRank | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_params(self) -> int:
        return sum(t.numel for t in self.trainable)

    head_trains: bool = False  # the output head's weight (or a trained copy of it) gets a gradient

    def traverses(self, layer: int, block: int) -> bool:
        """Whether backward runs through (layer, block): at or above the lowest trained part."""
        if self.grad_below:
            return True
        if self.first_trainable is None:
            return False
        return (layer, block) >= self.first_trainable


def adapt(shape: ModelShape, params: MethodSection, device_kind: str = "cpu") -> Adaptation:
    """The adaptation `params` (a method's params, validated by its own model) makes of `shape`."""
    from tuneforge.methods.table import method_of

    method = method_of(params.name)
    builder = BUILDERS.get(params.name)
    if builder is None:  # a table entry without a counting rule here: a gap to fill, not a user error
        raise PlanError(f"method {params.name!r} has no memory rule in tuneforge.plan.trainable.BUILDERS")
    result = builder(shape, params, device_kind)
    result.family = method.family
    _locate(shape, result)
    return result


# ---------------------------------------------------------------------------------------------------- helpers


def suffix_match(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _resolve(shape: ModelShape, targets: Any, method: str, key: str = "method.target_modules") -> list[str]:
    """Module names `targets` selects (peft's rules); an entry matching nothing is refused like check_targets."""
    sk = shape.skeleton
    if targets == "all-linear":
        return [lin.name for lin in sk.layer_linears()]
    names = [n for n in sk.modules]
    missing = [t for t in targets if not any(suffix_match(n, t) for n in names)]
    if missing:
        roles = sorted({lin.role for lin in sk.linears})
        raise PlanError(
            f"{key}: {', '.join(map(repr, missing))} not found in this model; linear modules: "
            f"{', '.join(roles)} (or all-linear)"
        )
    return [n for n in names if any(suffix_match(n, t) for t in targets)]


def _linears(shape: ModelShape, names: list[str], method: str, embedding_ok: bool = False) -> list[Linear | str]:
    """The linear layers (and, where the tuner supports it, the embedding) among `names`."""
    sk = shape.skeleton
    out: list[Linear | str] = []
    for name in names:
        lin = sk.linear(name)
        if lin is not None:
            out.append(lin)
        elif name == "model.embed_tokens" and embedding_ok:
            out.append(name)
        else:
            raise PlanError(
                f"method {method}: target module {name!r} is not a linear layer"
                + (" or the embedding" if embedding_ok else "")
                + "; peft cannot put this adapter on it"
            )
    return out


def _base(p: Param) -> Tensor:
    return Tensor(p.name, p.numel, "base", new=False)


def _unique(tensors: list[Tensor]) -> list[Tensor]:
    seen: dict[str, Tensor] = {}
    for t in tensors:
        seen.setdefault(t.name, t)
    return list(seen.values())


def _tied_name(shape: ModelShape, p: Param) -> Param:
    # Tied weights are one tensor: counted under the embedding's name, as named_parameters() yields it first.
    return next(q for q in shape.skeleton.params if q.tensor == p.tensor)


def _module_params(shape: ModelShape, modules: list[str]) -> list[Tensor]:
    tensors = [_base(_tied_name(shape, p)) for m in modules for p in shape.skeleton.params_under(m)]
    return _unique(tensors)


def _locate(shape: ModelShape, a: Adaptation) -> None:
    """first_trainable / grad_below from what trains: the lowest point backward must reach."""
    points: list[tuple[int, int]] = []
    for t in a.trainable:
        name = t.name
        if name.startswith("model.embed_tokens") or a.virtual_tokens:
            a.grad_below = True
        if name.startswith(LAYERS_PATH + "."):
            index = int(name.split(".")[2])
            block = 1 if (".mlp." in name or "post_attention_layernorm" in name) else 0
            points.append((index, block))
    points += [(t.linear.layer, 0 if t.linear.block == "attn" else 1) for t in a.targets if t.linear.layer is not None]
    points += [(b.layer, 0 if b.place == "attn" else 1) for b in a.bottlenecks]
    if a.prefix_tokens:
        points.append((0, 0))
    a.first_trainable = min(points) if points else None
    head = "model.embed_tokens.weight" if shape.tied else "lm_head.weight"
    a.head_trains = any(t.name in (head, "lm_head.weight.modules_to_save") for t in a.trainable)


# ----------------------------------------------------------------------------------------- full-weight methods


def _full(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    tensors = _unique([_base(_tied_name(shape, p)) for p in shape.skeleton.params])
    base = frozenset(lin.name for lin in shape.skeleton.linears)
    norms = frozenset(n for n, _, _ in shape.skeleton.norms)
    return Adaptation(params.name, "full", tensors, base_trainable=base, norms_trainable=norms)


def _freeze(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from tuneforge.methods.full import FreezeParams, matches

    p = _coerce(params, FreezeParams)
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
    tensors = _module_params(shape, modules)
    outside = [m for m in sk.modules if m != LAYERS_PATH and not m.startswith(LAYERS_PATH + ".")]
    for pattern in p.extra_modules:
        hits = [m for m in outside if matches(m, pattern)]
        if not hits:
            raise PlanError(
                f"method.extra_modules: {pattern!r} matches no module outside the decoder layers; available: "
                f"{', '.join(sorted({q.module for q in sk.params if not q.module.startswith(LAYERS_PATH)}))}"
            )
        tensors += [
            _base(_tied_name(shape, q))
            for m in hits
            for q in sk.params_under(m)
            if not q.module.startswith(LAYERS_PATH + ".")
        ]
    tensors = _unique(tensors)
    names = {t.name for t in tensors}
    base = frozenset(lin.name for lin in sk.linears if f"{lin.name}.weight" in names or _head_tied(shape, lin, names))
    norms = frozenset(m for m, _, _ in sk.norms if f"{m}.weight" in names)
    return Adaptation(params.name, "full", tensors, base_trainable=base, norms_trainable=norms)


def _head_tied(shape: ModelShape, lin: Linear, names: set[str]) -> bool:
    return lin.role == "lm_head" and shape.tied and "model.embed_tokens.weight" in names


def _low_rank(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    """GaLore / APOLLO: every weight trains; transformers' Trainer picks the projected Linear weights by name
    fragment (optim_target_modules), tuneforge's all-linear giving the decoder layers' linear layers."""
    p = _coerce(params, _params_class(params))
    a = _full(shape, params, device)
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


def _lora(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from tuneforge.methods.lora import LoraBase
    from tuneforge.methods.qlora import QloraParams

    p = _coerce(params, _params_class(params))
    assert isinstance(p, LoraBase)
    kind = "dora" if p.use_dora else "lora"
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name, embedding_ok=True):
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
        return [_base(q) for q in sk.params if q.name.endswith(".bias")]
    if bias == "lora_only":
        wanted = {f"{t.linear.name}.bias" for t in targets}
        return [_base(q) for q in sk.params if q.name in wanted]
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


def _adalora(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    r = p.init_r
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name):
        assert isinstance(t, Linear)
        # peft's AdaLoraLayer: lora_A (r × in), lora_E (r × 1), lora_B (out × r); ranknum does not train
        tensors += [
            Tensor(f"{t.name}.lora_A", r * t.in_features, "fp32", True, r, t.in_features),
            Tensor(f"{t.name}.lora_E", r, "fp32", True),
            Tensor(f"{t.name}.lora_B", t.out_features * r, "fp32", True, t.out_features, r),
        ]
        targets.append(Target(t, "adalora", r))
    return Adaptation(p.name, "lora", tensors, targets=targets)


def _loha(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name):
        assert isinstance(t, Linear)
        # peft's LoHaLayer (Linear): hada_w1_a, hada_w2_a (out × r) and hada_w1_b, hada_w2_b (r × in)
        for pair in ("w1", "w2"):
            tensors.append(Tensor(f"{t.name}.hada_{pair}_a", t.out_features * p.r, "fp32", True, t.out_features, p.r))
            tensors.append(Tensor(f"{t.name}.hada_{pair}_b", p.r * t.in_features, "fp32", True, p.r, t.in_features))
        targets.append(Target(t, "loha", p.r))
    return Adaptation(p.name, "lora", tensors, targets=targets)


def _lokr(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from peft.tuners.lokr.layer import factorization

    p = _coerce(params, _params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name):
        assert isinstance(t, Linear)
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


def _vera(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    chosen = [t for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name) if isinstance(t, Linear)]
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


def _oft(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name):
        assert isinstance(t, Linear)
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


def _boft(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    # peft's BOFTLayer forces one butterfly factor unless its CUDA extension builds (never on a CPU)
    factors = p.n_butterfly_factor if device == "gpu" else 1
    tensors: list[Tensor] = []
    buffers: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name):
        assert isinstance(t, Linear)
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


def _hra(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name):
        assert isinstance(t, Linear)
        tensors.append(Tensor(f"{t.name}.hra_u", t.in_features * p.r, "fp32", True, t.in_features, p.r))
        targets.append(Target(t, "hra", p.r))
    return Adaptation(p.name, "other", tensors, targets=targets)


def _fourierft(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    tensors: list[Tensor] = []
    buffers: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, p.target_modules, p.name), p.name):
        assert isinstance(t, Linear)
        if p.n_frequency > t.in_features * t.out_features:
            raise PlanError(
                f"method.n_frequency={p.n_frequency} exceeds in × out = {t.in_features * t.out_features} of {t.name}"
            )
        tensors.append(Tensor(f"{t.name}.fourierft_spectrum", p.n_frequency, "fp32", True))
        buffers.append(Tensor(f"{t.name}.indices", p.n_frequency * 4, "fp32", True))  # 2 × n int64 = 4n fp32-sized
        targets.append(Target(t, "fourierft", p.n_frequency))
    return Adaptation(p.name, "other", tensors, buffers, targets=targets)


# ------------------------------------------------------------------------------------------ prompt learning


def _prompt_tuning(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    n = p.num_virtual_tokens
    tensors = [Tensor("prompt_encoder.embedding", n * shape.hidden, "fp32", True, n, shape.hidden)]
    return Adaptation(p.name, "prompt", tensors, grad_below=True, virtual_tokens=n)


def _p_tuning(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    n, d = p.num_virtual_tokens, shape.hidden
    e = p.encoder_hidden_size or d  # peft: the token dimension when not given
    tensors = [Tensor("prompt_encoder.embedding", n * d, "fp32", True, n, d)]
    if p.encoder == "mlp":  # peft's PromptEncoder MLP: d → e → e → d, biases (always 2 hidden layers)
        sizes = [(d, e), (e, e), (e, d)]
    else:  # bidirectional LSTM of encoder_num_layers, then Linear(2e, 2e) → Linear(2e, d)
        for layer in range(p.encoder_num_layers):
            fan_in = d if layer == 0 else 2 * e
            per_direction = 4 * e * fan_in + 4 * e * e + 8 * e
            tensors.append(Tensor(f"prompt_encoder.lstm_head.l{layer}", 2 * per_direction, "fp32", True))
        sizes = [(2 * e, 2 * e), (2 * e, d)]
    for i, (fan_in, fan_out) in enumerate(sizes):
        tensors.append(Tensor(f"prompt_encoder.mlp_head.{i}.weight", fan_in * fan_out, "fp32", True, fan_out, fan_in))
        tensors.append(Tensor(f"prompt_encoder.mlp_head.{i}.bias", fan_out, "fp32", True))
    return Adaptation(p.name, "prompt", tensors, grad_below=True, virtual_tokens=n)


def _prefix(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    n, layers = p.num_virtual_tokens, shape.layers
    token = shape.head_dim * shape.kv_heads  # peft sizes prefixes by the KV heads (grouped-query attention)
    out = layers * 2 * token
    if getattr(p, "projection", False):  # embedding (n × token) → Linear(token, e) → Tanh → Linear(e, 2·L·token)
        e = getattr(p, "encoder_hidden_size", None) or shape.hidden  # tuneforge passes the model width
        tensors = [
            Tensor("prompt_encoder.embedding", n * token, "fp32", True, n, token),
            Tensor("prompt_encoder.transform.0.weight", token * e, "fp32", True, e, token),
            Tensor("prompt_encoder.transform.0.bias", e, "fp32", True),
            Tensor("prompt_encoder.transform.2.weight", e * out, "fp32", True, out, e),
            Tensor("prompt_encoder.transform.2.bias", out, "fp32", True),
        ]
    else:
        tensors = [Tensor("prompt_encoder.embedding", n * out, "fp32", True, n, out)]
    return Adaptation(p.name, "prompt", tensors, prefix_tokens=n)


def _mpt(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    n, d, tasks, ranks = p.num_virtual_tokens, shape.hidden, p.num_tasks, p.num_ranks
    tensors = [  # peft's MultitaskPromptEmbedding: a shared prompt, per-task column and row factors
        Tensor("prompt_encoder.embedding", n * d, "fp32", True, n, d),
        Tensor("prompt_encoder.prefix_task_cols", tasks * n * ranks, "fp32", True),
        Tensor("prompt_encoder.prefix_task_rows", tasks * ranks * d, "fp32", True),
    ]
    return Adaptation(p.name, "prompt", tensors, grad_below=True, virtual_tokens=n)


# ------------------------------------------------------------------------------------------------ adapters


def _ia3(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
    )

    p = _coerce(params, _params_class(params))
    wanted = p.target_modules or TARGETS[shape.model_type]
    feedforward = p.feedforward_modules or FF[shape.model_type]
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in _linears(shape, _resolve(shape, wanted, p.name), p.name):
        assert isinstance(t, Linear)
        ff = any(t.name.endswith(f) for f in feedforward)  # peft's _check_target_module_feedforward
        # peft's IA3Layer: a scaling vector over the input (feed-forward layers) or the output
        tensors.append(Tensor(f"{t.name}.ia3_l", t.in_features if ff else t.out_features, "fp32", True))
        targets.append(Target(t, "ia3_in" if ff else "ia3_out"))
    return Adaptation(p.name, "adapter", tensors, targets=targets)


def _ln_tuning(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING as TARGETS

    p = _coerce(params, _params_class(params))
    wanted = p.target_modules or TARGETS[shape.model_type]
    chosen = _resolve(shape, wanted, p.name)
    # peft's LNTuningLayer trains a copy of each chosen module (the original stays, frozen)
    tensors = [
        Tensor(f"{q.name}.ln_tuning", q.numel, "base", True) for m in chosen for q in shape.skeleton.params_under(m)
    ]
    norms = frozenset(m for m, _, _ in shape.skeleton.norms if m in chosen)
    return Adaptation(p.name, "adapter", tensors, norms_trainable=norms)


def _bitfit(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    sk = shape.skeleton
    existing = [_base(q) for q in sk.params if q.name.endswith(".bias")]
    if existing:
        return Adaptation(p.name, "adapter", existing, grad_below=False)
    if not p.add_biases:
        raise PlanError(
            "method bitfit: this model has no bias parameters and method.add_biases=false; "
            "set add_biases: true to train added zero biases"
        )
    flags = _config_flags(shape)
    missing = [f for f in ("attention_bias", "mlp_bias") if f not in flags]
    if missing:
        raise PlanError(
            f"method bitfit: model type {shape.model_type!r} has no biases, and its config has no "
            f"{' / '.join(missing)} setting to declare added ones; use a model with biases or another method"
        )
    added = [Tensor(f"{lin.name}.bias", lin.out_features, "base", True) for lin in sk.layer_linears()]
    return Adaptation(p.name, "adapter", added)


def _config_flags(shape: ModelShape) -> set[str]:
    """The attributes this architecture's transformers config class declares (bitfit needs two of them)."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(shape.model_type)
    return {f for f in ("attention_bias", "mlp_bias") if hasattr(config, f)}


def _bottleneck(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = _coerce(params, _params_class(params))
    series = p.name == "series_adapter"
    blocks = {"attn": p.attn_module, "mlp": p.mlp_module}
    for place in p.placement:
        if blocks[place] not in ("self_attn", "mlp"):
            raise PlanError(
                f"method.{place}_module={blocks[place]!r}: no such block in a decoder layer; its blocks: "
                "input_layernorm, mlp, post_attention_layernorm, self_attn"
            )
    tensors: list[Tensor] = []
    bottlenecks: list[Bottleneck] = []
    d, b = shape.hidden, p.bottleneck_size
    for i in range(shape.layers):
        for place in p.placement:
            name = f"{LAYERS_PATH}.{i}.{p.name}_{place}"
            tensors += [Tensor(f"{name}.down.weight", b * d, "base", True, b, d)]
            tensors += [Tensor(f"{name}.up.weight", d * b, "base", True, d, b)]
            if p.learned_scaling:
                tensors.append(Tensor(f"{name}.scaling", 1, "base", True))
            bottlenecks.append(Bottleneck(i, place, b, p.non_linearity, p.learned_scaling, series))
    return Adaptation(p.name, "adapter", tensors, bottlenecks=bottlenecks)


def _params_class(params: MethodSection) -> type[MethodSection]:
    from tuneforge.methods.table import method_of

    return method_of(params.name).params


def _coerce(params: MethodSection, cls: type[Any]) -> Any:
    from tuneforge.methods.common import MethodError, coerce

    try:
        return coerce(params, cls)
    except MethodError as e:
        raise PlanError(str(e)) from None


Builder = Callable[[ModelShape, MethodSection, str], Adaptation]

# method name -> its counting rule; every name of METHODS has one (tests/test_plan.py checks both ways)
BUILDERS: dict[str, Builder] = {
    "full": _full,
    "freeze": _freeze,
    "galore": _low_rank,
    "apollo": _low_rank,
    "lora": _lora,
    "dora": _lora,
    "rslora": _lora,
    "pissa": _lora,
    "olora": _lora,
    "lora_plus": _lora,
    "qlora": _lora,
    "adalora": _adalora,
    "loha": _loha,
    "lokr": _lokr,
    "vera": _vera,
    "prompt_tuning": _prompt_tuning,
    "p_tuning": _p_tuning,
    "prefix_tuning": _prefix,
    "p_tuning_v2": _prefix,
    "mpt": _mpt,
    "ia3": _ia3,
    "ln_tuning": _ln_tuning,
    "bitfit": _bitfit,
    "series_adapter": _bottleneck,
    "parallel_adapter": _bottleneck,
    "oft": _oft,
    "boft": _boft,
    "hra": _hra,
    "fourierft": _fourierft,
}
