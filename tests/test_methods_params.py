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
