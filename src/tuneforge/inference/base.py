"""The base model a `model:` section names: model.path, with model.adapter on it (folded into the weights when
model.merge_adapter is set).

This is how a run that started from an earlier run (docs/stages.md, "Continuing from a run") gets its base back,
in training and in every workflow that loads the run afterwards (eval, chat, serve, export): a chain
general → domain → sub-domain is rebuilt by loading the first base and putting each adapter on it in turn.
The run folders of the chain are read through `tuneforge.runs` (`adapter_run`, `base_section`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.config import ConfigError, ModelConfig
from tuneforge.methods import is_adapter_folder, load_trained, merge
from tuneforge.models.loader import load_model
from tuneforge.runs import RunDir, adapter_run, base_section

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("tuneforge.models")


@dataclass(frozen=True, kw_only=True)
class AdapterStart:
    """What model.adapter names, found on disk."""

    folder: Path  # the adapter folder (a run's adapter/, or the folder given)
    run: RunDir | None  # the run it belongs to; None for a folder outside any run
    base: ModelConfig  # the section that loads the base this adapter was trained on


def adapter_start(model_cfg: ModelConfig) -> AdapterStart:
    """The adapter folder of model.adapter, its run and the base under it; every folder that cannot serve is a
    ConfigError naming the key and the value."""
    value = model_cfg.adapter
    if value is None:
        raise ConfigError("model.adapter is not set")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"model.adapter={value!r}: no such folder; give a run folder (runs/NAME) or an adapter folder"
        )
    run = adapter_run(path)
    if run is not None:
        folder = run.adapter
        if not folder.is_dir():
            if run.model.is_dir():
                raise ConfigError(
                    f"model.adapter={value!r}: run {run.root} trained a whole model ({run.model}), not an adapter; "
                    f"to train on from it, set model.path={str(run.model)!r} and leave model.adapter out"
                )
            raise ConfigError(
                f"model.adapter={value!r}: run {run.root} has no trained output yet (no adapter/): did it finish?"
            )
        base = base_section(run)
    elif is_adapter_folder(path):
        folder, base = path, model_cfg.model_copy(update={"adapter": None, "merge_adapter": False})
    elif (path / "config.json").is_file():
        raise ConfigError(
            f"model.adapter={value!r} is a whole model folder (config.json), not an adapter; to train on from it, "
            f"set model.path={value!r} and leave model.adapter out"
        )
    else:
        raise ConfigError(
            f"model.adapter={value!r} is neither a tuneforge run folder (config.yaml) nor an adapter folder "
            "(adapter_config.json or tuneforge_adapter.json)"
        )
    # The whole chain loads in the dtype, and with the code trust, of the config at hand.
    base = base.model_copy(update={"dtype": model_cfg.dtype, "trust_remote_code": model_cfg.trust_remote_code})
    return AdapterStart(folder=folder, run=run, base=base)


def adapter_tokenizer(model_cfg: ModelConfig) -> ModelConfig:
    """`model_cfg`, reading its tokenizer from model.adapter's folder when model.tokenizer is unset and the adapter
    saved one: the tokenizer the adapter was trained with (a vocabulary its run extended, its pad token)."""
    if model_cfg.adapter is None or model_cfg.tokenizer is not None:
        return model_cfg
    folder = adapter_start(model_cfg).folder
    if (folder / "tokenizer_config.json").is_file():
        return model_cfg.model_copy(update={"tokenizer": str(folder)})
    return model_cfg


def load_base(
    model_cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
    auto_class: Any = None,
    **load_kwargs: Any,
) -> PreTrainedModel:
    """model.path loaded by `models.loader.load_model` (same arguments), with model.adapter on it.

    With model.merge_adapter the adapter is folded into the weights (peft's merge_and_unload, through
    `methods.merge`) and a plain model comes back; without, the PEFT model (not trainable: a stage that trains
    the same adapter further loads it itself, `is_trainable=True`). The adapter's own base is loaded first, the
    same way, so a chain of runs is rebuilt link by link.
    """
    if model_cfg.adapter is None:
        return load_model(model_cfg, tokenizer, auto_class, **load_kwargs)
    start = adapter_start(model_cfg)
    model = load_base(start.base, tokenizer, auto_class, **load_kwargs)
    model = load_trained(model, start.folder, trust_remote_code=model_cfg.trust_remote_code)
    if not model_cfg.merge_adapter:
        return model  # type: ignore[no-any-return]
    log.info("model.adapter: %s folded into the base (model.merge_adapter)", start.folder)
    return merge(model)  # type: ignore[no-any-return]
