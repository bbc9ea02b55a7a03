"""A Llama-family model's shapes from its config.json alone, and the skeleton of modules and parameters that
peft and tuneforge's methods would see in the loaded model — no weights, no torch tensors.

The skeleton names modules exactly as transformers does (`model.layers.3.self_attn.q_proj`, `lm_head`), so a
method's `target_modules` resolve here by the same rules as on the real model; tests/test_plan.py checks the
skeleton's parameter names and sizes against the transformers model built on the meta device for every preset.

Supported architectures: the Llama family whose decoder layer is RMSNorm → attention (q, k, v, o; grouped
KV heads) → RMSNorm → SwiGLU MLP (gate, up, down): llama (SmolLM, Llama 2/3), mistral, qwen2 (biases on q, k, v)
and qwen3 (per-head q_norm / k_norm). Anything else is refused by name, since its shapes would be a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tuneforge.plan import PlanError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
LAYERS_PATH = "model.layers"

# Presets: the config.json fields of well-known checkpoints (their published configs), so a plan needs no download.
PRESETS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {  # SmolLM2-135M(-Instruct), the embedded model
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "max_position_embeddings": 8192,
    },
    "0.5b": {  # Qwen2.5-0.5B
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "max_position_embeddings": 32768,
    },
    "1.5b": {  # Qwen2.5-1.5B
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "max_position_embeddings": 32768,
    },
    "7b": {  # Llama-2-7B
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "8b": {  # Llama-3.1-8B
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
    },
    "13b": {  # Llama-2-13B
        "model_type": "llama",
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    "14b": {  # Qwen2.5-14B
        "model_type": "qwen2",
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 48,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
    },
    "32b": {  # Qwen2.5-32B
        "model_type": "qwen2",
        "hidden_size": 5120,
        "intermediate_size": 27648,
        "num_hidden_layers": 64,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
    },
    "33b": {  # LLaMA-33B, the QLoRA paper's 33B (huggyllama/llama-30b config.json; 32.5B parameters)
        "model_type": "llama",
        "hidden_size": 6656,
        "intermediate_size": 17920,
        "num_hidden_layers": 60,
        "num_attention_heads": 52,
        "num_key_value_heads": 52,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "65b": {  # LLaMA-65B (the QLoRA paper's largest model)
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 22016,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
    },
    "70b": {  # Llama-2-70B
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
}


@dataclass(frozen=True)
class Linear:
    name: str  # the module's full name in the loaded model
    role: str  # q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head
    layer: int | None  # decoder layer index; None for lm_head
    in_features: int
    out_features: int
    bias: bool

    @property
    def block(self) -> str:
        return "attn" if self.role in ATTN_ROLES else "mlp" if self.role in MLP_ROLES else "head"


ATTN_ROLES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_ROLES = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Param:
    name: str  # as in model.named_parameters()
    numel: int
    module: str  # the module holding it
    tensor: str  # identity of the storage: tied parameters share one


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a config.json that decide memory and FLOPs."""

    name: str  # preset name or the file it was read from
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    attn_bias: bool  # q, k, v, o biases (Llama's / Qwen3's attention_bias)
    qkv_bias: bool  # q, k, v biases (always on in Qwen2)
    mlp_bias: bool
    qk_norm: bool  # Qwen3: RMSNorm over each head's q and k
    max_positions: int | None = None
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, raw: dict[str, Any], source: str) -> ModelShape:
        raw = dict(raw.get("text_config") or raw) if "text_config" in raw and "hidden_size" not in raw else raw
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED:
            raise PlanError(
                f"{source}: model_type {model_type!r} is not a supported architecture; tuneforge plan knows the "
                f"Llama family: {', '.join(SUPPORTED)}"
            )
        want = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        missing = [k for k in want if k not in raw]
        if missing:
            raise PlanError(f"{source}: config.json lacks {', '.join(missing)}")
        values = {k: _positive_int(raw, k, source) for k in want}
        heads = values["num_attention_heads"]
        kv = _positive_int(raw, "num_key_value_heads", source) if raw.get("num_key_value_heads") else heads
        if heads % kv:
            raise PlanError(f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
        head_dim = _positive_int(raw, "head_dim", source) if raw.get("head_dim") else values["hidden_size"] // heads
        attn_bias = bool(raw.get("attention_bias", False)) and model_type in ("llama", "qwen3")
        return cls(
            name=source,
            model_type=model_type,
            hidden=values["hidden_size"],
            intermediate=values["intermediate_size"],
            layers=values["num_hidden_layers"],
            heads=heads,
            kv_heads=kv,
            head_dim=head_dim,
            vocab=values["vocab_size"],
            tied=bool(raw.get("tie_word_embeddings", False)),  # False is the default of all four config classes
            attn_bias=attn_bias,
            qkv_bias=attn_bias or model_type == "qwen2",
            mlp_bias=bool(raw.get("mlp_bias", False)) and model_type == "llama",
            qk_norm=model_type == "qwen3",
            max_positions=raw.get("max_position_embeddings"),
            config=dict(raw),
        )

    @cached_property
    def skeleton(self) -> Skeleton:
        return Skeleton.of(self)

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def _positive_int(raw: dict[str, Any], key: str, source: str) -> int:
    value = raw[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PlanError(f"{source}: {key}={value!r} must be a positive integer")
    return value


@dataclass(frozen=True)
class Skeleton:
    """Modules and parameters of the loaded model, named as transformers names them."""

    linears: tuple[Linear, ...]
    norms: tuple[tuple[str, int, int | None], ...]  # (module name, width, layer or None)
    params: tuple[Param, ...]
    modules: tuple[str, ...]  # every module name, containers included, in named_modules() order

    @classmethod
    def of(cls, s: ModelShape) -> Skeleton:
        linears: list[Linear] = []
        norms: list[tuple[str, int, int | None]] = []
        params: list[Param] = []
        modules = ["model", "model.embed_tokens", LAYERS_PATH]

        def add(name: str, numel: int, tensor: str | None = None) -> None:
            module, _, _ = name.rpartition(".")
            params.append(Param(name, numel, module, tensor or name))

        add("model.embed_tokens.weight", s.vocab * s.hidden)
        shapes = {
            "q_proj": (s.hidden, s.q_width, s.qkv_bias),
            "k_proj": (s.hidden, s.kv_width, s.qkv_bias),
            "v_proj": (s.hidden, s.kv_width, s.qkv_bias),
            "o_proj": (s.q_width, s.hidden, s.attn_bias),
            "gate_proj": (s.hidden, s.intermediate, s.mlp_bias),
            "up_proj": (s.hidden, s.intermediate, s.mlp_bias),
            "down_proj": (s.intermediate, s.hidden, s.mlp_bias),
        }
        for i in range(s.layers):
            layer = f"{LAYERS_PATH}.{i}"
            modules += [layer, f"{layer}.self_attn"]
            for role in ATTN_ROLES:
                _linear(layer, "self_attn", role, i, shapes[role], linears, modules, add)
            if s.qk_norm:
                for norm in ("q_norm", "k_norm"):
                    name = f"{layer}.self_attn.{norm}"
                    modules.append(name)
                    norms.append((name, s.head_dim, i))
                    add(f"{name}.weight", s.head_dim)
            modules.append(f"{layer}.mlp")
            for role in MLP_ROLES:
                _linear(layer, "mlp", role, i, shapes[role], linears, modules, add)
            modules.append(f"{layer}.mlp.act_fn")
            for norm in ("input_layernorm", "post_attention_layernorm"):
                modules.append(f"{layer}.{norm}")
                norms.append((f"{layer}.{norm}", s.hidden, i))
                add(f"{layer}.{norm}.weight", s.hidden)
        modules += ["model.norm", "model.rotary_emb", "lm_head"]
        norms.append(("model.norm", s.hidden, None))
        add("model.norm.weight", s.hidden)
        linears.append(Linear("lm_head", "lm_head", None, s.hidden, s.vocab, False))
        add("lm_head.weight", s.vocab * s.hidden, "model.embed_tokens.weight" if s.tied else None)
        return cls(tuple(linears), tuple(norms), tuple(params), tuple(modules))

    def total(self) -> int:
        """Parameters, each tied tensor once (as peft and methods.count_parameters count them)."""
        return sum({p.tensor: p.numel for p in self.params}.values())

    def params_under(self, module: str) -> list[Param]:
        return [p for p in self.params if p.module == module or p.module.startswith(module + ".")]

    def linear(self, name: str) -> Linear | None:
        return self._linears_by_name.get(name)

    @cached_property
    def _linears_by_name(self) -> dict[str, Linear]:
        return {lin.name: lin for lin in self.linears}

    def layer_linears(self) -> list[Linear]:
        return [lin for lin in self.linears if lin.layer is not None]


def _linear(
    layer: str,
    block: str,
    role: str,
    index: int,
    shape: tuple[int, int, bool],
    linears: list[Linear],
    modules: list[str],
    add: Any,
) -> None:
    name = f"{layer}.{block}.{role}"
    fan_in, fan_out, bias = shape
    linears.append(Linear(name, role, index, fan_in, fan_out, bias))
    modules.append(name)
    add(f"{name}.weight", fan_in * fan_out)
    if bias:
        add(f"{name}.bias", fan_out)


def load_shape(spec: str) -> ModelShape:
    """A preset name, `embedded`, a config.json file or a model folder holding one."""
    key = spec.strip().lower()
    if key in PRESETS:
        return ModelShape.from_config(PRESETS[key], key)
    from tuneforge.models.embedded import is_cached, is_embedded, target_dir

    if is_embedded(spec):
        if is_cached():
            return _read(target_dir() / "config.json", "embedded")
        return ModelShape.from_config(PRESETS["smollm2-135m"], "embedded (SmolLM2-135M preset)")
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise PlanError(f"model folder {spec!r} has no config.json")
        return _read(path, str(path))
    if path.is_file():
        return _read(path, str(path))
    raise PlanError(
        f"model {spec!r} is neither a preset ({', '.join(PRESETS)}), nor 'embedded', nor a config.json file or "
        "model folder"
    )


def _read(path: Path, source: str) -> ModelShape:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanError(f"{path}: not a readable config.json: {e}") from e
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: a config.json is a JSON object, got {type(raw).__name__}")
    return ModelShape.from_config(raw, source)
