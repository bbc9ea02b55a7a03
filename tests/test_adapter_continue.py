"""model.adapter: a run continued from an earlier run, trained further (the same adapter) or folded in (merge)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from tests.test_sft import make_cfg
from tests.tiny import build_model, build_tokenizer
from tuneforge.config import ConfigError
from tuneforge.inference import LocalEngine
from tuneforge.runs import RunFolderError, model_config_of_run
from tuneforge.stages import load_config, run_stage
from tuneforge.stages.continuation import resolve_start

Q_PROJ = "model.layers.0.self_attn.q_proj"


def trained_state(model: Any) -> dict[str, torch.Tensor]:
    """What the adapter file holds: PEFT's adapter state dict, or the trained tensors of tuneforge's own format."""
    if isinstance(model, PeftModel):
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Snapshot(TrainerCallback):
    """The model's adapter weights (and, under LoRA, one base weight) as training begins, before any step."""

    def __init__(self) -> None:
        self.adapter: dict[str, torch.Tensor] = {}
        self.q_base: torch.Tensor | None = None
        self.model: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.adapter, self.model = trained_state(model), model
        if isinstance(model, PeftModel) and hasattr(model.get_submodule(f"base_model.model.{Q_PROJ}"), "base_layer"):
            self.q_base = model.get_submodule(f"base_model.model.{Q_PROJ}").base_layer.weight.detach().clone()


def raw(tmp_path: Path, model_dir: Path, name: str, **sections: Any) -> dict[str, Any]:
    cfg = make_cfg(tmp_path, model_dir, **sections)
    cfg["name"] = name
    cfg["train"] = {**cfg["train"], "threads": 1}
    return cfg


def continued(tmp_path: Path, name: str, parent: Path, **sections: Any) -> dict[str, Any]:
    """A config that leaves model.path and the method out: both come from the run it continues."""
    cfg = raw(tmp_path, Path("unused"), name, **sections)
    cfg["model"] = {"adapter": str(parent), **sections.get("model", {})}
    if "method" not in sections:
        del cfg["method"]
    return cfg


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The general run: LoRA r=4, three steps."""
    tmp = tmp_path_factory.mktemp("chain")
    result = run_stage(load_config(raw(tmp, tiny_model_dir, "general", train={"max_steps": 3})))
    return result.run_dir


def test_continuing_trains_the_same_adapter_from_where_it_ended(first: Path, tiny_model_dir: Path) -> None:
    snap = Snapshot()
    cfg = load_config(continued(first.parent.parent, "domain", first))
    result = run_stage(cfg, callbacks=[snap])
    ended = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    assert set(snap.adapter) == set(ended)
    assert all(torch.equal(snap.adapter[k], ended[k]) for k in ended)  # loaded, not re-initialised
    trained = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert result.steps == 2 and set(trained) == set(ended)
    assert any(not torch.equal(trained[k], ended[k]) for k in ended)  # and trained further

    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["adapter"] == str(first) and saved["model"]["merge_adapter"] is False
    assert saved["model"]["path"] == str(tiny_model_dir)  # the earlier run's base, model.path left out
    assert saved["method"] == json.loads((first / "adapter" / "tuneforge_method.json").read_text())
    parent = json.loads((result.run_dir / "result.json").read_text())["parent"]
    assert parent == {"run": str(first), "adapter": str(first / "adapter"), "merged": False, "method": "lora"}

    # eval / chat / serve / export load a run through model_config_of_run and the engine: the continued adapter
    base_cfg, output = model_config_of_run(result.run_dir)
    assert base_cfg.adapter is None and base_cfg.path == str(tiny_model_dir) and output == result.output_dir
    engine = LocalEngine(base_cfg, output)
    loaded = get_peft_model_state_dict(engine.model)
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_merge_route_folds_the_adapter_in_and_trains_a_fresh_one(first: Path, tiny_model_dir: Path) -> None:
    snap = Snapshot()
    method = {"name": "lora", "r": 2, "alpha": 4}
    cfg = load_config(continued(first.parent.parent, "merged", first, model={"merge_adapter": True}, method=method))
    result = run_stage(cfg, callbacks=[snap])

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    plain_q = base.get_submodule(Q_PROJ).weight.detach().clone()
    folded_q = PeftModel.from_pretrained(base, str(first / "adapter")).merge_and_unload().get_submodule(Q_PROJ).weight
    assert snap.q_base is not None and not torch.equal(snap.q_base, plain_q)  # the first adapter is in the weights
    assert torch.equal(snap.q_base, folded_q)
    fresh = [v for k, v in snap.adapter.items() if "lora_B" in k]
    assert fresh and all(not v.any() for v in fresh)  # a new LoRA (B = 0), not the first run's
    assert all(v.shape[0] == 2 for k, v in snap.adapter.items() if "lora_A" in k)  # of this config's rank
    assert json.loads((result.output_dir / "adapter_config.json").read_text())["r"] == 2

    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["adapter"] == str(first) and saved["model"]["merge_adapter"] is True
    assert json.loads((result.run_dir / "result.json").read_text())["parent"]["merged"] is True

    # the run's base, rebuilt for eval / chat / export: the first adapter folded in again, this run's on top
    base_cfg, output = model_config_of_run(result.run_dir)
    engine = LocalEngine(base_cfg, output)
    assert torch.equal(engine.model.get_submodule(f"base_model.model.{Q_PROJ}").base_layer.weight, folded_q)
    trained = load_file(str(output / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(engine.model)
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)

    # a third link trains the merged run's adapter further: its base is still the first adapter folded in
    third = run_stage(load_config(continued(first.parent.parent, "sub", result.run_dir, train={"max_steps": 1})))
    assert json.loads((third.output_dir / "adapter_config.json").read_text())["r"] == 2
    base_cfg, output = model_config_of_run(third.run_dir)
    assert base_cfg.adapter == str(first) and base_cfg.merge_adapter
    engine = LocalEngine(base_cfg, output)
    assert torch.equal(engine.model.get_submodule(f"base_model.model.{Q_PROJ}").base_layer.weight, folded_q)


def resolve(cfg: dict[str, Any]) -> Any:
    return resolve_start(load_config(cfg))


def test_bad_starting_points_are_refused_naming_key_and_value(
    first: Path, tmp_path: Path, tiny_model_dir: Path, tiny_llama3_dir: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"model.adapter='.*empty' is neither a tuneforge run folder"):
        resolve(continued(tmp_path, "x", empty))
    with pytest.raises(ConfigError, match=r"model.adapter='.*nowhere': no such folder"):
        resolve(continued(tmp_path, "x", tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"is a whole model folder .*set model.path="):
        resolve(continued(tmp_path, "x", tiny_model_dir))
    with pytest.raises(ConfigError, match=r"merge_adapter=true folds model.adapter into the base, but model.adapter"):
        load_config(raw(tmp_path, tiny_model_dir, "x", model={"merge_adapter": True}))

    other_base = continued(tmp_path, "x", first, model={"path": str(tiny_llama3_dir)})
    with pytest.raises(ConfigError, match=r"model.path='.*tiny-llama3.*' is not the base model of model.adapter=.*"):
        resolve(other_base)
    with pytest.raises(ConfigError, match=rf"was trained on model.path='{tiny_model_dir}'"):
        resolve(other_base)
    same_base = resolve(continued(tmp_path, "x", first, model={"path": str(tiny_model_dir)}))
    assert same_base.model.path == str(tiny_model_dir)

    with pytest.raises(ConfigError, match=r"method.r=8 contradicts model.adapter=.*trained with r=4"):
        resolve(continued(tmp_path, "x", first, method={"name": "lora", "r": 8}))
    with pytest.raises(ConfigError, match=r"method.name='dora': model.adapter=.* is a lora adapter"):
        resolve(continued(tmp_path, "x", first, method="dora"))
    with pytest.raises(ConfigError, match=r"is this run's own folder"):
        resolve(continued(first.parent.parent, "general", first))
    agreeing = resolve(continued(tmp_path, "x", first, method={"name": "lora", "r": 4, "alpha": 8}))
    assert agreeing.method.r == 4 and agreeing.method.alpha == 8


def test_adapter_folders_outside_runs(first: Path, tmp_path: Path, tiny_llama3_dir: Path) -> None:
    loose = tmp_path / "loose"
    shutil.copytree(first / "adapter", loose)
    # outside a run its base is model.path, checked against the base the adapter records
    cfg = continued(tmp_path, "x", loose, model={"path": str(tiny_llama3_dir)})
    with pytest.raises(
        ConfigError, match=r"model.path='.*tiny-llama3.*' is not the base .*which was trained on '.*tiny-chatml"
    ):
        resolve(cfg)
    recorded = json.loads((loose / "adapter_config.json").read_text())["base_model_name_or_path"]
    cfg["model"]["path"] = recorded
    assert resolve(cfg).method.r == 4  # its tuneforge_method.json still says how it was built
    (loose / "tuneforge_method.json").unlink()
    with pytest.raises(ConfigError, match=r"has no tuneforge_method.json, so the method settings .* unknown"):
        resolve(cfg)
    cfg["model"]["merge_adapter"] = True  # a foreign adapter can still be folded in
    assert resolve(cfg).model.merge_adapter


def test_runs_that_cannot_start_a_chain(tmp_path: Path, tiny_model_dir: Path) -> None:
    one_step = {"max_steps": 1}
    full = run_stage(load_config(raw(tmp_path, tiny_model_dir, "whole", method={"name": "full"}, train=one_step)))
    with pytest.raises(ConfigError, match=r"model.adapter='.*whole': run .* trained a whole model .*set model.path="):
        resolve(continued(tmp_path, "x", full.run_dir))
    prompt = {"name": "prompt_tuning", "num_virtual_tokens": 2}
    soft = run_stage(load_config(raw(tmp_path, tiny_model_dir, "soft", method=prompt, train=one_step)))
    merge = continued(tmp_path, "x", soft.run_dir, model={"merge_adapter": True})
    with pytest.raises(ConfigError, match=r"the prompt_tuning adapter of model.adapter=.* cannot be folded"):
        resolve(merge)
    with pytest.raises(ConfigError, match=r"is a prompt_tuning adapter \(prompt learning\), which PEFT loads for"):
        resolve(continued(tmp_path, "x", soft.run_dir))


def test_a_continued_run_needs_the_run_it_came_from(first: Path, tmp_path: Path) -> None:
    chain = tmp_path / "runs"
    shutil.copytree(first, chain / "general")
    cfg = load_config(continued(tmp_path, "next", chain / "general", train={"max_steps": 1}))
    result = run_stage(cfg)
    assert model_config_of_run(result.run_dir)[0].adapter is None
    shutil.rmtree(chain / "general")
    with pytest.raises(RunFolderError, match=r"model.adapter='.*general', which no longer exists"):
        model_config_of_run(result.run_dir)


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 wide: bitsandbytes quantises in blocks of 64 weights."""
    folder = tmp_path_factory.mktemp("wide")
    tok = build_tokenizer("chatml")
    build_model(tok, hidden=64).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "method",
    [
        {"name": "qlora", "r": 4},
        {"name": "bitfit"},
        {"name": "ia3"},
        {"name": "lora_plus", "r": 4},
    ],
    ids=["qlora", "bitfit", "ia3", "lora_plus"],
)
def test_every_adapter_family_trains_on_from_where_it_ended(tmp_path: Path, wide_model_dir: Path, method) -> None:
    if method["name"] == "qlora":
        pytest.importorskip("bitsandbytes")
    first = run_stage(load_config(raw(tmp_path, wide_model_dir, "a", method=method))).run_dir
    snap = Snapshot()
    result = run_stage(load_config(continued(tmp_path, "b", first)), callbacks=[snap])
    ended = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    assert set(snap.adapter) == set(ended) and all(torch.equal(snap.adapter[k], ended[k]) for k in ended)
    trained = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert any(not torch.equal(trained[k], ended[k]) for k in ended)
    saved = json.loads((result.output_dir / "tuneforge_method.json").read_text())
    assert saved == json.loads((first / "adapter" / "tuneforge_method.json").read_text())
    if method["name"] == "qlora":  # trained on the 4-bit base, as the first run was
        assert type(snap.model.get_submodule(f"base_model.model.{Q_PROJ}").base_layer).__name__ == "Linear4bit"
        with pytest.raises(ConfigError, match=r"method 'qlora' prepares the base while its weights load"):
            resolve(continued(tmp_path, "c", first, model={"merge_adapter": True}, method=method))
