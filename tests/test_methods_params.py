"""Method params through `config.load`, and the errors a wrong setting produces at apply time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

from tuneforge.config import ConfigError, MethodSection, ModelConfig, load
from tuneforge.methods import (
    METHOD_PARAMS,
    METHODS,
    FreezeParams,
    FullParams,
    LoraParams,
    MethodError,
    apply_method,
    describe,
    load_trained,
    merge,
    save_trained,
)
from tuneforge.methods.full import decoder_layers, matches
from tuneforge.models.loader import load_model, load_tokenizer


def _method(spec: Any, *overrides: str) -> MethodSection:
    return load({"method": spec}, list(overrides), methods=METHOD_PARAMS).method


def _model(folder: Path) -> Any:
    cfg = ModelConfig(path=str(folder))
    return load_model(cfg, load_tokenizer(cfg))


def test_table_is_consistent() -> None:
    assert set(METHODS) >= {"full", "freeze", "lora", "qlora", "adalora", "mpt", "series_adapter", "galore"}
    for name, method in METHODS.items():
        assert method.params().name == name  # the Literal default picks the table entry
        assert METHOD_PARAMS[name] is method.params
        for field, info in method.params.model_fields.items():
            assert field == "name" or info.description, f"{name}.{field} has no description"


def test_config_load_builds_each_params_model() -> None:
    assert isinstance(_method("full"), FullParams)
    freeze = _method({"name": "freeze", "trainable_layers": -1, "trainable_modules": ["mlp"]})
    assert isinstance(freeze, FreezeParams) and freeze.trainable_layers == -1
    lora = _method("lora", "method.r=16", "method.target_modules=q_proj,v_proj", "method.use_dora=true")
    assert isinstance(lora, LoraParams)
    assert (lora.r, lora.target_modules, lora.use_dora) == (16, ["q_proj", "v_proj"], True)
    assert _method({"name": "lora", "target_modules": "all"}).target_modules == "all-linear"
    assert _method({"name": "lora", "init": "pissa_niter_4"}).init == "pissa_niter_4"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "freeze", "trainable_layers": 0}, "must not be 0"),
        ({"name": "freeze", "trainable_modules": ["all", "mlp"]}, "give it alone"),
        ({"name": "freeze", "trainable_modules": []}, "at least one"),
        ({"name": "lora", "init": "loftq"}, "method.init"),
        ({"name": "lora", "init": "pissa_niter_x"}, "method.init"),
        ({"name": "lora", "init": "orthogonal", "r": 3}, "even r"),
        ({"name": "lora", "init": "pissa", "use_dora": True}, "use_dora"),
        ({"name": "lora", "init": "olora", "modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"name": "lora", "target_modules": []}, "empty"),
        ({"name": "lora", "r": 0}, "method.r"),
        ({"name": "lora", "alhpa": 8}, "did you mean 'alpha'"),
        ({"name": "full", "r": 8}, "unknown key 'method.r'"),
        ({"name": "svft"}, "allowed: adalora, apollo, bitfit"),
    ],
)
def test_invalid_params_name_the_key(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _method(spec)


def test_bare_section_is_validated_with_defaults(tiny_model_dir: Path) -> None:
    # config.load without a table leaves a bare MethodSection; apply_method fills the method's defaults.
    model = apply_method(_model(tiny_model_dir), MethodSection(name="freeze"))
    assert all(p.requires_grad for p in model.model.layers[-1].parameters())
    with pytest.raises(MethodError, match="allowed: adalora, apollo"):
        apply_method(model, MethodSection(name="prefix"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (LoraParams(target_modules=["q_proj", "qkv"]), r"'qkv' not found.*linear modules: .*q_proj"),
        (LoraParams(modules_to_save=["head"]), r"'head' not found.*lm_head"),
        (FreezeParams(trainable_layers=3), r"only 2 decoder layers"),
        (FreezeParams(trainable_layers=-3), r"only 2 decoder layers"),
        (FreezeParams(trainable_modules=["attn"]), r"'attn' matches no sub-module.*self_attn"),
        (FreezeParams(trainable_modules=["rotary_emb"]), r"matches no sub-module"),
        (FreezeParams(extra_modules=["embed"]), r"'embed' matches no module.*model\.embed_tokens"),
        (FreezeParams(trainable_layers=1, trainable_modules=["mlp.act_fn"]), r"no parameters"),
    ],
)
def test_apply_errors_list_what_exists(tiny_llama3_dir: Path, params: MethodSection, message: str) -> None:
    with pytest.raises(MethodError, match=message):
        apply_method(_model(tiny_llama3_dir), params)


def test_freeze_extra_model_keeps_unchosen_layers_frozen(tiny_model_dir: Path) -> None:
    model = apply_method(_model(tiny_model_dir), FreezeParams(trainable_layers=1, extra_modules=["model"]))
    assert model.model.norm.weight.requires_grad and model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[0].parameters())


def test_decoder_layers_unknown_architecture_names_the_type() -> None:
    class Config:
        model_type = "mystery"

    class Odd(nn.Module):
        config = Config()

        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2)])

    with pytest.raises(MethodError, match=r"'mystery'.*LAYER_PATHS"):
        decoder_layers(Odd())  # type: ignore[arg-type]


def test_matches_whole_segments() -> None:
    assert matches("mlp.up_proj", "mlp")
    assert matches("self_attn.q_proj", "self_attn.q_proj")
    assert matches("model.norm", "norm")
    assert not matches("input_layernorm", "norm")
    assert not matches("self_attn.q_proj", "proj")


def test_describe_names_method_and_share(tiny_model_dir: Path) -> None:
    params = FreezeParams(trainable_layers=1)
    line = describe(apply_method(_model(tiny_model_dir), params), params)
    assert line.startswith("method freeze (trainable_layers=1")
    assert "trainable of" in line and "%" in line


def test_output_kind_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    lora = apply_method(_model(tiny_model_dir), LoraParams())
    with pytest.raises(MethodError, match="merge first"):
        save_trained(lora, FullParams(), tmp_path / "x", tokenizer)
    with pytest.raises(MethodError, match="expected a PEFT model"):
        save_trained(_model(tiny_model_dir), LoraParams(), tmp_path / "y", tokenizer)
    adapter = save_trained(lora, LoraParams(), tmp_path / "adapter", tokenizer)
    with pytest.raises(MethodError, match="pass it as base_model"):
        load_trained(None, adapter)
    with pytest.raises(MethodError, match="neither an adapter"):
        load_trained(None, tmp_path)
    with pytest.raises(MethodError, match="nothing to merge"):
        merge(_model(tiny_model_dir))


# --- the method zoo ---------------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def test_docs_table_is_generated_from_the_method_table() -> None:
    from tuneforge.methods.catalog import render

    page = DOCS.read_text(encoding="utf-8")
    assert page == render(page), "docs/methods.md is stale: python -m tuneforge.methods.catalog --write docs/methods.md"
    for name in METHODS:
        assert f"**`{name}`**" in page


@pytest.mark.parametrize(
    ("preset", "plain"),
    [
        ({"name": "dora"}, {"name": "lora", "use_dora": True}),
        ({"name": "rslora"}, {"name": "lora", "use_rslora": True}),
        ({"name": "pissa"}, {"name": "lora", "init": "pissa"}),
        ({"name": "pissa", "init": "pissa_niter_4"}, {"name": "lora", "init": "pissa_niter_4"}),
        ({"name": "olora"}, {"name": "lora", "init": "olora"}),
    ],
)
def test_lora_presets_build_the_same_peft_config(preset: dict[str, Any], plain: dict[str, Any]) -> None:
    from tuneforge.methods.lora import build_lora_config

    assert build_lora_config(_method(preset)) == build_lora_config(_method(plain))  # type: ignore[arg-type]


def test_every_method_validates_with_defaults_through_config_load() -> None:
    for name, method in METHODS.items():
        params = _method(name)
        assert type(params) is method.params
        assert params.name == name


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "dora", "use_dora": False}, "method.use_dora"),
        ({"name": "olora", "init": "pissa"}, "method.init"),
        ({"name": "pissa", "init": "olora"}, "method.init"),
        ({"name": "lora_plus", "lr_ratio": 0.5}, "method.lr_ratio"),
        ({"name": "qlora", "bits": 3}, "method.bits"),
        ({"name": "qlora", "init": "pissa"}, "not supported on a quantised base"),
        ({"name": "adalora", "target_r": 16, "init_r": 8}, "must not exceed init_r"),
        ({"name": "adalora", "tinit": 5, "tfinal": 5, "total_step": 10}, "no budgeting phase"),
        ({"name": "prompt_tuning", "init": "text"}, "init=text needs init_text"),
        ({"name": "prompt_tuning", "init_text": "hi"}, "init_text is used only"),
        ({"name": "p_tuning", "encoder": "gru"}, "method.encoder"),
        ({"name": "p_tuning_v2", "projection": True}, "method.projection"),
        ({"name": "mpt", "task_id": 2, "num_tasks": 2}, "below num_tasks"),
        ({"name": "ia3", "target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}, "not in target"),
        ({"name": "ia3", "feedforward_modules": ["down_proj"]}, "needs target_modules"),
        ({"name": "series_adapter", "placement": ["ffn"]}, "method.placement"),
        ({"name": "series_adapter", "placement": []}, "attn, mlp or both"),
        ({"name": "parallel_adapter", "placement": "mlp,mlp"}, "each once"),
        ({"name": "series_adapter", "non_linearity": "swish"}, "method.non_linearity"),
        ({"name": "hra", "r": 3}, "must be even"),
        ({"name": "galore", "proj_type": "diagonal"}, "method.proj_type"),
        ({"name": "vera", "r": 0}, "method.r"),
        ({"name": "bitfit", "r": 8}, "unknown key 'method.r'"),
    ],
)
def test_zoo_params_refuse_bad_values(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _method(spec)


def test_string_lists_are_split() -> None:
    assert _method({"name": "parallel_adapter", "placement": "attn, mlp"}).placement == ["attn", "mlp"]  # type: ignore[attr-defined]
    assert _method({"name": "ia3", "target_modules": "k_proj,v_proj"}).target_modules == ["k_proj", "v_proj"]  # type: ignore[attr-defined]
    assert _method({"name": "galore", "target_modules": "all"}).target_modules == "all-linear"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "loha", "target_modules": ["qkv"]}, r"'qkv' not found.*linear modules"),
        ({"name": "ln_tuning", "target_modules": ["layer_norm"]}, r"'layer_norm' not found"),
        ({"name": "series_adapter", "mlp_module": "ffn"}, r"method.mlp_module='ffn'.*blocks: .*mlp"),
        ({"name": "parallel_adapter", "placement": ["attn"], "attn_module": "attn"}, r"attn_module"),
        ({"name": "bitfit", "add_biases": False}, r"no bias parameters.*add_biases"),
        ({"name": "qlora"}, r"not quantised"),
    ],
)
def test_zoo_apply_errors_name_the_setting(tiny_llama3_dir: Path, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(MethodError, match=message):
        apply_method(_model(tiny_llama3_dir), _method(spec))


def test_bitfit_refuses_a_model_that_cannot_declare_biases() -> None:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    with pytest.raises(MethodError, match=r"'mistral' has no biases.*attention_bias / mlp_bias"):
        apply_method(MistralForCausalLM(config), _method("bitfit"))


def test_bitfit_merged_model_reloads_as_a_standard_hf_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = apply_method(_model(tiny_model_dir), _method("bitfit"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.uniform_(-0.1, 0.1)
    ids = torch.arange(12).reshape(2, 6)
    merged = merge(model)
    merged.save_pretrained(tmp_path / "merged")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, merged.eval()(input_ids=ids).logits)


def test_native_adapter_refuses_a_different_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    params = _method({"name": "series_adapter", "bottleneck_size": 4})
    out = save_trained(apply_method(_model(tiny_model_dir), params), params, tmp_path / "a", tokenizer)
    spec = (out / "tuneforge_adapter.json").read_text()
    assert '"format": "tuneforge-adapter"' in spec and '"bottleneck_size": 4' in spec
    deeper = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(MethodError, match="do not fit this model"):
        load_trained(deeper, out)
