"""Several adapters on one base: the engines a server needs for a model and its `--adapter NAME=DIR`s.

One adapter alone is merged into its base (when mergeable and unquantised). Several LoRA-type adapters that fit
one base (the same tokenizer, an unquantised base, no load hook) are loaded as PEFT named adapters on a single
copy of the base and switched per batch; any other adapter gets its own engine (and its own copy of the base).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from tuneforge.config import ModelConfig
from tuneforge.inference.engine import LocalEngine
from tuneforge.methods import method_of, model_load_kwargs, saved_params
from tuneforge.models.loader import load_tokenizer

log = logging.getLogger("tuneforge.engine")


def engines_for_adapters(
    model_cfg: ModelConfig, adapters: Mapping[str, Path | None], *, merge: bool = True
) -> dict[str, LocalEngine]:
    """name -> engine for each entry (None: the base model alone), sharing one base where the adapters allow."""
    if len(adapters) == 1:
        ((name, folder),) = adapters.items()
        return {name: LocalEngine(model_cfg, folder, merge_adapter=merge)}
    base_tokenizer = load_tokenizer(model_cfg)
    shared = [n for n, d in adapters.items() if d is None or _fits_shared_base(model_cfg, d, base_tokenizer)]
    engines: dict[str, LocalEngine] = {}
    if len(shared) > 1:
        engines.update(_shared_engines(model_cfg, {n: adapters[n] for n in shared}))
    for name, folder in adapters.items():
        if name not in engines:
            engines[name] = LocalEngine(model_cfg, folder, merge_adapter=merge)
    return {name: engines[name] for name in adapters}


def _shared_engines(model_cfg: ModelConfig, adapters: Mapping[str, Path | None]) -> dict[str, LocalEngine]:
    from peft import PeftModel

    base = LocalEngine(model_cfg)
    internal = {name: f"adapter_{i}" for i, (name, d) in enumerate(adapters.items()) if d is not None}
    model = base.model
    for name, peft_name in internal.items():
        folder = str(adapters[name])
        if isinstance(model, PeftModel):
            model.load_adapter(folder, adapter_name=peft_name)
        else:
            model = PeftModel.from_pretrained(model, folder, adapter_name=peft_name)
    base.model = model.eval()
    log.info("serving %s on one copy of the base, adapters unmerged and switched per batch", ", ".join(adapters))
    return {name: base.view(name, internal.get(name)) for name in adapters}


def _fits_shared_base(model_cfg: ModelConfig, folder: Path, base_tokenizer: object) -> bool:
    """A PEFT LoRA-type adapter on an unquantised base, needing no load hook, with the base's tokenizer."""
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        return False
    if json.loads(config_file.read_text(encoding="utf-8")).get("peft_type") != "LORA":
        return False
    params = saved_params(folder)
    if params is not None and (model_load_kwargs(params) or method_of(params).after_load is not None):
        return False
    if (folder / "tokenizer_config.json").is_file():
        own = load_tokenizer(model_cfg.model_copy(update={"tokenizer": str(folder)}))
        same_vocab = own.get_vocab() == base_tokenizer.get_vocab()  # type: ignore[attr-defined]
        if not same_vocab or own.chat_template != getattr(base_tokenizer, "chat_template", None):
            return False
    return True
