"""Counting rules of plan/trainable.py: prompt learning and the adapter families (IA3, LN tuning, BitFit,
bottleneck adapters); each cites the peft layer (or tuneforge method) whose tensors it counts."""

from __future__ import annotations

from tuneforge.config import MethodSection
from tuneforge.plan import PlanError
from tuneforge.plan.adaptation import (
    Adaptation,
    Bottleneck,
    Target,
    Tensor,
    base_tensor,
    coerce_params,
    linears,
    params_class,
    resolve_targets,
)
from tuneforge.plan.shapes import LAYERS_PATH, Linear, ModelShape

# ------------------------------------------------------------------------------------------ prompt learning


def count_prompt_tuning(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    n = p.num_virtual_tokens
    tensors = [Tensor("prompt_encoder.embedding", n * shape.hidden, "fp32", True, n, shape.hidden)]
    return Adaptation(p.name, "prompt", tensors, grad_below=True, virtual_tokens=n)


def count_p_tuning(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
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


def count_prefix(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
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


def count_mpt(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    n, d, tasks, ranks = p.num_virtual_tokens, shape.hidden, p.num_tasks, p.num_ranks
    tensors = [  # peft's MultitaskPromptEmbedding: a shared prompt, per-task column and row factors
        Tensor("prompt_encoder.embedding", n * d, "fp32", True, n, d),
        Tensor("prompt_encoder.prefix_task_cols", tasks * n * ranks, "fp32", True),
        Tensor("prompt_encoder.prefix_task_rows", tasks * ranks * d, "fp32", True),
    ]
    return Adaptation(p.name, "prompt", tensors, grad_below=True, virtual_tokens=n)


# ------------------------------------------------------------------------------------------------ adapters


def count_ia3(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
    )

    p = coerce_params(params, params_class(params))
    wanted = p.target_modules or TARGETS[shape.model_type]
    feedforward = p.feedforward_modules or FF[shape.model_type]
    tensors: list[Tensor] = []
    targets: list[Target] = []
    for t in linears(shape, resolve_targets(shape, wanted, p.name), p.name):
        assert isinstance(t, Linear)
        ff = any(t.name.endswith(f) for f in feedforward)  # peft's _check_target_module_feedforward
        # peft's IA3Layer: a scaling vector over the input (feed-forward layers) or the output
        tensors.append(Tensor(f"{t.name}.ia3_l", t.in_features if ff else t.out_features, "fp32", True))
        targets.append(Target(t, "ia3_in" if ff else "ia3_out"))
    return Adaptation(p.name, "adapter", tensors, targets=targets)


def count_ln_tuning(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING as TARGETS

    p = coerce_params(params, params_class(params))
    wanted = p.target_modules or TARGETS[shape.model_type]
    chosen = resolve_targets(shape, wanted, p.name)
    # peft's LNTuningLayer trains a copy of each chosen module (the original stays, frozen)
    tensors = [
        Tensor(f"{q.name}.ln_tuning", q.numel, "base", True) for m in chosen for q in shape.skeleton.params_under(m)
    ]
    norms = frozenset(m for m, _, _ in shape.skeleton.norms if m in chosen)
    return Adaptation(p.name, "adapter", tensors, norms_trainable=norms)


def count_bitfit(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
    sk = shape.skeleton
    existing = [base_tensor(q) for q in sk.params if q.name.endswith(".bias")]
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


def count_bottleneck(shape: ModelShape, params: MethodSection, device: str) -> Adaptation:
    p = coerce_params(params, params_class(params))
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
