"""Continuing from an earlier run (`model.adapter`), so sequential fine-tuning (general → domain → sub-domain) is a
chain of configs (docs/stages.md, "Continuing from a run").

`resolve_start` turns the config into the one the new run folder records, before the stage runs (`run_stage`)
and before anything loads:

- `model:` keys the config leaves unset come from the earlier run's own `model:` section (path, dtype, chat
  template, ...); a model.path that is set must name that run's base. model.tokenizer, unset, becomes the
  adapter's folder when it saved its tokenizer (the vocabulary and pad token it trained with).
- training the same adapter further (no model.merge_adapter): the method is the adapter's saved params
  (tuneforge_method.json). A `method:` key the config sets must equal the saved value, every key alike: the
  adapter's shape (r, target_modules, ...) is fixed by its weights, and its other settings (alpha, dropout, the
  optimiser's lr_ratio, ...) are what it was trained with, so a chain stays one method. Prompt-learning
  adapters cannot train further (PEFT loads them for inference only) nor fold in: they start no chain.
- folding it in (model.merge_adapter: true): the adapter must be mergeable; the config's method applies fresh.

`train_further` is the load step of the first route (PEFT's `from_pretrained(..., is_trainable=True)`), and
`start_record` what result.json notes of the earlier run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuneforge.config import ConfigError, MethodSection, ModelConfig, RunConfig, format_errors
from tuneforge.inference.base import AdapterStart, adapter_start
from tuneforge.methods import (
    METHOD_FILE,
    METHODS,
    MethodError,
    adapter_base_name,
    load_trained,
    prepare_base,
    saved_params,
)
from tuneforge.models import ModelError
from tuneforge.models.loader import resolve_model_path
from tuneforge.stages.table import STAGES

log = logging.getLogger("tuneforge.train")

# The `model:` keys a continued run takes from the earlier run when its config leaves them unset.
INHERITED_MODEL_KEYS = ("path", "tokenizer", "dtype", "trust_remote_code", "chat_template", "download")


def resolve_start(cfg: RunConfig) -> RunConfig:
    """`cfg` with model.adapter resolved (the model section and method the run trains with); unchanged without."""
    if cfg.model.adapter is None:
        return cfg
    start = adapter_start(cfg.model)
    if start.run is not None and start.run.root.resolve() == cfg.run_dir.resolve():
        raise ConfigError(f"model.adapter={cfg.model.adapter!r} is this run's own folder; start from an earlier run")
    model = _model_section(cfg.model, start)
    if cfg.model.merge_adapter:
        _check_mergeable(cfg.model, start)
        method = cfg.method
    else:
        method = _continued_method(cfg, start)
        _check_stage_kind(cfg, start)
    folds = cfg.model.merge_adapter or start.base.adapter is not None
    if folds and METHODS[method.name].load_kwargs is not None:
        raise ConfigError(
            f"method {method.name!r} prepares the base while its weights load (e.g. 4-bit), but this run's base is "
            f"built after loading, by folding in the adapter of model.adapter={cfg.model.adapter!r}; export that run "
            "merged (`tuneforge export RUN`) and set model.path to the exported folder, or use method lora"
        )
    resolved = cfg.model_copy(update={"model": model, "method": method})
    try:  # the load-time checks again (method x stage, privacy ...), now on the method the run trains
        RunConfig.model_validate(dict(resolved), context={"stages": STAGES})
    except ValidationError as e:
        raise ConfigError(format_errors(e, f"model.adapter={cfg.model.adapter!r}", RunConfig)) from None
    how = "folded into the base, method applied fresh" if cfg.model.merge_adapter else "trained further"
    log.info("model.adapter: %s (%s, method %s)", start.folder, how, method.name)
    return resolved


def _model_section(own: ModelConfig, start: AdapterStart) -> ModelConfig:
    given = own.model_fields_set
    inherited: dict[str, Any] = {}
    if start.run is None:
        _check_recorded_base(own, start.folder)
    else:
        recorded = start.run.model_section()
        inherited = {k: getattr(recorded, k) for k in INHERITED_MODEL_KEYS if k not in given}
        if "path" in given and not same_model(own.path, recorded.path):
            raise ConfigError(
                f"model.path={own.path!r} is not the base model of model.adapter={own.adapter!r}: run {start.run.root} "
                f"was trained on model.path={recorded.path!r}; leave model.path out to take that run's base"
            )
    if "tokenizer" not in given and (start.folder / "tokenizer_config.json").is_file():
        inherited["tokenizer"] = str(start.folder)
    return own.model_copy(update=inherited)


def same_model(a: str, b: str) -> bool:
    """Whether two model.path values name one model folder (a folder that cannot be found names no model)."""
    if a == b:
        return True
    try:
        return resolve_model_path(ModelConfig(path=a)).resolve() == resolve_model_path(ModelConfig(path=b)).resolve()
    except ModelError:
        return False


def _check_recorded_base(own: ModelConfig, folder: Path) -> None:
    """An adapter folder outside any run: check model.path against the base its config records, where that is
    a folder on this machine (a hub id cannot be compared with a local folder)."""
    recorded = adapter_base_name(folder)
    if recorded is None or not Path(recorded).expanduser().is_dir():
        log.info("model.adapter: %s does not name a base folder here; trusting model.path=%s", folder, own.path)
        return
    if not same_model(own.path, recorded):
        raise ConfigError(
            f"model.path={own.path!r} is not the base model of model.adapter={own.adapter!r}, which was trained on "
            f"{recorded!r} (base_model_name_or_path in {folder}); set model.path to that base"
        )


def _continued_method(cfg: RunConfig, start: AdapterStart) -> MethodSection:
    value = cfg.model.adapter
    saved = saved_params(start.folder)
    if saved is None:
        raise ConfigError(
            f"model.adapter={value!r}: {start.folder} has no {METHOD_FILE}, so the method settings it was trained with "
            "are unknown and it cannot be trained further as the same adapter; set model.merge_adapter=true to fold "
            "it into the base and train a new adapter on top"
        )
    if METHODS[saved.name].family == "prompt":
        # peft refuses from_pretrained(is_trainable=True) for prompt learning: P-tuning and prefix projections save
        # the prompts their encoder computed, not the encoder, so there is no adapter left to train further.
        raise ConfigError(
            f"model.adapter={value!r} is a {saved.name} adapter (prompt learning), which PEFT loads for inference "
            "only, and a prompt has no weights to fold into the base; train a new prompt on the base, or chain "
            "runs of a weight method (lora, ...)"
        )
    mine, given = cfg.method, cfg.method.model_fields_set
    instead = "or set model.merge_adapter=true to fold it into the base and train a new adapter with your settings"
    if "name" in given and mine.name != saved.name:
        raise ConfigError(
            f"method.name={mine.name!r}: model.adapter={value!r} is a {saved.name} adapter, and training it further "
            f"keeps its method; leave method.name out (or write {saved.name!r}), {instead}"
        )
    for key in sorted(given - {"name"}):
        if key not in type(saved).model_fields:
            raise ConfigError(
                f"method.{key}: model.adapter={value!r} is a {saved.name} adapter, which has no setting {key!r}; "
                f"leave it out, {instead}"
            )
        if getattr(mine, key) != getattr(saved, key):
            raise ConfigError(
                f"method.{key}={getattr(mine, key)!r} contradicts model.adapter={value!r}, trained with "
                f"{key}={getattr(saved, key)!r} ({start.folder / METHOD_FILE}): training the same adapter further "
                f"keeps every setting it was built with; leave method.{key} out, {instead}"
            )
    return saved


def _check_mergeable(own: ModelConfig, start: AdapterStart) -> None:
    saved = saved_params(start.folder)
    if saved is not None and not METHODS[saved.name].mergeable:
        raise ConfigError(
            f"model.merge_adapter=true: the {saved.name} adapter of model.adapter={own.adapter!r} cannot be folded "
            "into the base weights (it is not a weight update); leave model.merge_adapter out to train it further"
        )


def _check_stage_kind(cfg: RunConfig, start: AdapterStart) -> None:
    """A reward model's adapter (stage rm, with its score head) and a language model's are different kinds."""
    if start.run is None:
        return
    raw = yaml.safe_load(start.run.config.read_text(encoding="utf-8")) or {}
    earlier = str(raw.get("stage", "sft"))
    if (earlier == "rm") != (cfg.stage == "rm"):
        raise ConfigError(
            f"model.adapter={cfg.model.adapter!r} is the adapter of a stage {earlier!r} run, which stage {cfg.stage!r} "
            "cannot train further (a reward model has a score head, a language model its vocabulary); set "
            "model.merge_adapter=true to fold it into the base and train a new adapter"
        )


def continued_adapter(cfg: RunConfig) -> AdapterStart | None:
    """The adapter this run trains further (model.adapter without merge), None when the method applies fresh."""
    if cfg.model.adapter is None or cfg.model.merge_adapter:
        return None
    return adapter_start(cfg.model)


def train_further(model: Any, cfg: RunConfig, start: AdapterStart) -> Any:
    """The saved adapter on `model` (its base, loaded), trainable: PEFT's from_pretrained(is_trainable=True), or
    tuneforge's own adapter format for BitFit and the bottleneck adapters."""
    saved = saved_params(start.folder)
    if saved is None or saved.model_dump(mode="json") != cfg.method.model_dump(mode="json"):
        # resolve_start made them equal; a stage that adds modules to save (rm's head, pt's new embedding rows)
        # cannot add them to an adapter that exists already.
        raise MethodError(
            f"stage {cfg.stage} trains method settings {cfg.method.model_dump(mode='json')} but the adapter of "
            f"model.adapter={cfg.model.adapter!r} was built with {saved.model_dump(mode='json') if saved else None}; "
            "set model.merge_adapter=true to fold it into the base and train a new adapter"
        )
    model = prepare_base(model, saved)
    return load_trained(model, start.folder, trust_remote_code=cfg.model.trust_remote_code, is_trainable=True)


def start_record(cfg: RunConfig) -> dict[str, Any] | None:
    """What result.json notes of the run this one started from (None: it started from the base alone)."""
    if cfg.model.adapter is None:
        return None
    start = adapter_start(cfg.model)
    saved = saved_params(start.folder)
    return {
        "run": str(start.run.root) if start.run is not None else None,
        "adapter": str(start.folder),
        "merged": cfg.model.merge_adapter,
        "method": saved.name if saved is not None else None,
    }
