"""The shapes of an adaptation (what a method trains and adds) and the helpers every counting rule of
plan/trainable.py shares: peft's target-module matching on the model skeleton, tied weights, params coercion."""

from __future__ import annotations

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


# ---------------------------------------------------------------------------------------------------- helpers


def suffix_match(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def resolve_targets(shape: ModelShape, targets: Any, method: str, key: str = "method.target_modules") -> list[str]:
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


def linears(shape: ModelShape, names: list[str], method: str, embedding_ok: bool = False) -> list[Linear | str]:
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


def base_tensor(p: Param) -> Tensor:
    return Tensor(p.name, p.numel, "base", new=False)


def unique(tensors: list[Tensor]) -> list[Tensor]:
    seen: dict[str, Tensor] = {}
    for t in tensors:
        seen.setdefault(t.name, t)
    return list(seen.values())


def tied_name(shape: ModelShape, p: Param) -> Param:
    # Tied weights are one tensor: counted under the embedding's name, as named_parameters() yields it first.
    return next(q for q in shape.skeleton.params if q.tensor == p.tensor)


def module_params(shape: ModelShape, modules: list[str]) -> list[Tensor]:
    tensors = [base_tensor(tied_name(shape, p)) for m in modules for p in shape.skeleton.params_under(m)]
    return unique(tensors)


def locate(shape: ModelShape, a: Adaptation) -> None:
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


def params_class(params: MethodSection) -> type[MethodSection]:
    from tuneforge.methods.table import method_of

    return method_of(params.name).params


def coerce_params(params: MethodSection, cls: type[Any]) -> Any:
    from tuneforge.methods.common import MethodError, coerce

    try:
        return coerce(params, cls)
    except MethodError as e:
        raise PlanError(str(e)) from None


def target_linears(shape: ModelShape, p: Any) -> list[Linear]:
    """The Linear layers `p.target_modules` selects (peft's rules), for the families that adapt Linears only."""
    found = linears(shape, resolve_targets(shape, p.target_modules, p.name), p.name)
    return [t for t in found if isinstance(t, Linear)]
