"""load(): YAML or a mapping, plus key.path=value overrides, into a validated RunConfig, with readable errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.run import MethodTable, RunConfig, StageTable
from tuneforge.config.sections import ConfigError, MethodSection
from tuneforge.utils.names import did_you_mean


def load(
    source: str | Path | Mapping[str, Any],
    overrides: Sequence[str] = (),
    methods: MethodTable | None = None,
    stages: StageTable | None = None,
) -> RunConfig:
    """Read a YAML file (or a mapping), apply `a.b=c` overrides, validate everything, return a frozen config.

    `methods` and `stages` are the method and stage tables (tuneforge.methods.METHOD_PARAMS,
    tuneforge.stages.table.STAGES): without them only the method's name is checked, and nothing stage-specific.
    """
    if isinstance(source, Mapping):
        raw: dict[str, Any] = dict(source)
        origin = "<config>"
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {origin!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{origin}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
        raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    raw = _normalise_method(raw, methods, origin)
    if stages is not None:
        _check_stage_name(raw, stages, origin)
    try:
        return RunConfig.model_validate(raw, context={"stages": stages})
    except ValidationError as e:
        raise ConfigError(format_errors(e, origin, RunConfig)) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a raw config mapping; the value is parsed as YAML (so 1e-4, true, [a, b] work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value (e.g. train.lr=1e-4)")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "method":
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section (its value is {child!r})")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _normalise_method(raw: dict[str, Any], methods: MethodTable | None, origin: str) -> dict[str, Any]:
    spec = raw.get("method", {})
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{origin}: `method` must be a method name or a mapping with `name`, got {spec!r}")
    # `name` defaults to lora without being written into the spec, so the params' model_fields_set holds only
    # what the config says (model.adapter takes the unsaid settings from the run it continues).
    name = spec.get("name", "lora")
    if methods is None:  # no table given: only the name is checked (callers that train pass the table)
        methods = {str(name): MethodSection}
    if name not in methods:
        raise ConfigError(
            f"{origin}: method.name={name!r} is not a known method; allowed: {', '.join(sorted(methods))}"
            + _suggest(str(name), list(methods))
        )
    try:
        params = methods[name].model_validate(spec)
    except ValidationError as e:
        raise ConfigError(format_errors(e, origin, methods[name], prefix="method")) from None
    return {**raw, "method": params}


def _check_stage_name(raw: dict[str, Any], stages: StageTable, origin: str) -> None:
    name = raw.get("stage", RunConfig.model_fields["stage"].default)
    if not isinstance(name, str) or name not in stages:
        raise ConfigError(
            f"{origin}: stage={name!r} is not a known stage; allowed: {', '.join(stages)}"
            + _suggest(str(name), list(stages))
        )


def format_errors(err: ValidationError, origin: str, root: type[BaseModel], prefix: str = "") -> str:
    lines = [f"{origin}: invalid configuration"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join([prefix, *loc] if prefix else loc)
        if e["type"] == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            lines.append(f"  - unknown key {key!r}" + _suggest(loc[-1], known) + _allowed(known))
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}{shown}: {msg}")
    return "\n".join(lines)


def _known_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(model.model_fields) if model is not None else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_type(arg)
        if found is not None:
            return found
    return None


# Names users bring from LLaMA-Factory / HF TrainingArguments / PEFT, suggested (never silently accepted).
FAMILIAR_NAMES = {
    "rank": "r",
    "lora_rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lora_target": "target_modules",
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "lr_scheduler",
    "finetuning_type": "name",
    "model_name_or_path": "path",
    "template": "chat_template",
    "dataset": "datasets",
    "output_dir": "dir",
    "overwrite_output_dir": "overwrite",
    "resume_from_checkpoint": "resume",
}


def _suggest(word: str, known: Sequence[str]) -> str:
    familiar = FAMILIAR_NAMES.get(word)
    if familiar in known:
        return f" (did you mean {familiar!r}?)"
    return did_you_mean(word, known)


def _allowed(known: Sequence[str]) -> str:
    return f"; allowed: {', '.join(known)}" if known else ""
