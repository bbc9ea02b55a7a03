"""The web UI's training form, derived from the config models: one widget per config key, named by its key path.

Nothing here knows a widget toolkit: `FIELDS` lists the keys with the kind of widget they need, `build_config`
turns the widgets' values back into a config through `tuneforge.config.load` (so the form gets exactly the
errors `tuneforge train` gives), and `config_yaml` writes the YAML that `tuneforge train` reads.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tuneforge.config import ConfigError, RunConfig
from tuneforge.data.registry import load_info, registries
from tuneforge.methods import METHOD_PARAMS
from tuneforge.stages import STAGES, load_config, stage_sections

Kind = Literal["check", "number", "choice", "text"]

# section -> the stages it applies to, for the sections the stage table gives to stages (tuneforge.stages.table).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = stage_sections()
# Sections of the form and the config model behind each (RunConfig's own field types).
SECTIONS: dict[str, type[BaseModel]] = {
    name: typing.cast(type[BaseModel], RunConfig.model_fields[name].annotation)
    for name in ("model", "data", "train", "output", *STAGE_SECTIONS)
}
# data.datasets is a multi-select of registered names (handled by `datasets_value`), not a generic widget.
SPECIAL_KEYS = ("data.datasets",)
TOP_KEYS = ("name", "stage")
# Always written to the YAML even when equal to the default, so the file reads on its own.
ALWAYS_WRITTEN = ("name", "stage", "model.path", "method.name")
WEBUI_HEADER = "# written by tuneforge webui; run it with: tuneforge train {path}\n"


@dataclass(frozen=True)
class FieldSpec:
    """One form widget: `key` is the config key path (YAML key = CLI override = widget id)."""

    key: str
    kind: Kind
    default: Any
    info: str = ""
    choices: tuple[Any, ...] = ()
    integer: bool = False
    methods: tuple[str, ...] = ()  # method.* keys: the methods having this parameter
    per_method: dict[str, FieldInfo] = field(default_factory=dict, compare=False, repr=False)

    @property
    def section(self) -> str:
        return self.key.split(".")[0] if "." in self.key else ""


def section_title(section: str) -> str:
    """A section's title in the form; a section of a stage names its stage(s): `vocab (stage pt)`."""
    stages = STAGE_SECTIONS.get(section)
    return f"{section} (stage {', '.join(stages)})" if stages else section


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return annotation, False


def kind_of(annotation: Any) -> tuple[Kind, tuple[Any, ...], bool]:
    """Widget kind, choices and whether a number is an integer, for a field annotation."""
    inner, optional = _strip_optional(annotation)
    if inner is bool:
        return "check", (), False
    if inner in (int, float):
        # an optional number is a text box: a number widget cannot be empty, and empty means "not set"
        return ("text" if optional else "number"), (), inner is int
    if typing.get_origin(inner) is Literal:
        values = typing.get_args(inner)
        if all(isinstance(v, bool) for v in values):
            return "check", (), False
        return "choice", tuple(values), False
    return "text", (), False


def wants_text(annotation: Any) -> bool:
    """True when a widget's string is the value itself (str fields); otherwise it is parsed as YAML."""
    inner, _ = _strip_optional(annotation)
    if inner is str:
        return True
    return typing.get_origin(inner) is Literal and all(isinstance(v, str) for v in typing.get_args(inner))


def _section_fields() -> list[FieldSpec]:
    out = []
    for name in TOP_KEYS:
        info = RunConfig.model_fields[name]
        kind, choices, integer = kind_of(info.annotation)
        if name == "stage":  # a plain str in the config: its values are the stage table's rows
            kind, choices = "choice", tuple(STAGES)
        out.append(FieldSpec(name, kind, info.default, info.description or "", choices, integer))
    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            key = f"{section}.{name}"
            if key in SPECIAL_KEYS:
                continue
            kind, choices, integer = kind_of(info.annotation)
            default = info.get_default(call_default_factory=True)
            out.append(FieldSpec(key, kind, default, info.description or "", choices, integer))
    return out


def _method_fields() -> list[FieldSpec]:
    """One widget per parameter name over all methods; a name whose type differs between methods gets a text box."""
    by_name: dict[str, dict[str, FieldInfo]] = {}
    for method, params in METHOD_PARAMS.items():
        for name, info in params.model_fields.items():
            if name != "name":
                by_name.setdefault(name, {})[method] = info
    out = [FieldSpec("method.name", "choice", "lora", "Fine-tuning method (docs/methods.md).", tuple(METHOD_PARAMS))]
    for name, per_method in by_name.items():
        found = [kind_of(i.annotation) for i in per_method.values()]
        kinds = {k[0] for k in found}
        kind: Kind = next(iter(kinds)) if len(kinds) == 1 else "text"
        if kinds == {"choice", "text"} and all(wants_text(i.annotation) for i in per_method.values()):
            kind = "choice"  # Literal in one method, free text in another: choices per method, custom allowed
        integer = all(k[2] for k in found)  # a number that is a float in any method is entered as a float
        first = next(iter(per_method.values()))
        out.append(
            FieldSpec(
                f"method.{name}",
                kind,
                first.get_default(call_default_factory=True),
                first.description or "",
                (),
                integer,
                tuple(per_method),
                per_method,
            )
        )
    return out


FIELDS: tuple[FieldSpec, ...] = (*_section_fields(), *_method_fields())
KEYS: tuple[str, ...] = tuple(f.key for f in FIELDS)


def field_info(spec: FieldSpec, method: str) -> FieldInfo | None:
    """The pydantic field behind a widget for the chosen method (None: the method has no such parameter)."""
    if spec.section != "method":
        if not spec.section:
            return RunConfig.model_fields[spec.key]
        return SECTIONS[spec.section].model_fields[spec.key.split(".", 1)[1]]
    if spec.key == "method.name":
        return None
    return spec.per_method.get(method)


def method_choices(spec: FieldSpec, method: str) -> tuple[Any, ...]:
    info = field_info(spec, method)
    if info is None:
        return ()
    return kind_of(info.annotation)[1]


def display(value: Any, kind: Kind) -> Any:
    """A config value as its widget shows it."""
    if kind in ("check", "number"):
        return value
    if value is None:
        return ""
    if kind == "choice" and not isinstance(value, (list, dict)):
        return value if isinstance(value, str) else str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)  # yaml.safe_dump would add a document end marker ("2\n...")
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()


def defaults(method: str = "lora") -> dict[str, Any]:
    """Widget values of a fresh form: every config default (method parameters: the method's own defaults)."""
    out = {}
    for spec in FIELDS:
        info = field_info(spec, method)
        value = spec.default if info is None else info.get_default(call_default_factory=True)
        if spec.key == "method.name":
            value = method
        out[spec.key] = display(value, spec.kind)
    return out


def applies(spec: FieldSpec, stage: str, method: str) -> bool:
    """Whether a widget belongs in the config for this stage and method."""
    if spec.section in STAGE_SECTIONS:
        return stage in STAGE_SECTIONS[spec.section]
    if spec.section == "method" and spec.key != "method.name":
        return method in spec.methods
    return True


def coerce(spec: FieldSpec, value: Any, method: str) -> Any:
    """A widget value back to a config value; None means "not set" (the default applies)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if spec.kind == "check":
        return bool(value)
    if spec.kind == "number":
        number = float(value)
        return int(number) if spec.integer and number.is_integer() else number
    info = field_info(spec, method)
    if info is not None and wants_text(info.annotation):
        return str(value)
    if spec.key in ("name", "stage", "method.name"):
        return str(value)
    try:
        return yaml.safe_load(str(value))
    except yaml.YAMLError as e:
        raise ConfigError(f"{spec.key} = {value!r}: not a valid YAML value ({e.__class__.__name__})") from None


def raw_config(values: Mapping[str, Any], datasets: Iterable[str]) -> dict[str, Any]:
    """The nested mapping `tuneforge.config.load` takes, from widget values keyed by config key path."""
    stage = str(values.get("stage") or "sft")
    method = str(values.get("method.name") or "lora")
    raw: dict[str, Any] = {}
    for spec in FIELDS:
        if spec.key not in values or not applies(spec, stage, method):
            continue
        value = coerce(spec, values[spec.key], method)
        if value is None:
            continue
        node = raw
        *parents, last = spec.key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    chosen = [str(d) for d in datasets if d]
    if chosen:
        raw.setdefault("data", {})["datasets"] = [dataset_spec(d) for d in chosen]
    return raw


def dataset_spec(value: str) -> dict[str, str]:
    """A registered name, or (typed into the dataset box) a file or folder path."""
    return {"path": value} if "/" in value or Path(value).suffix else {"name": value}


def build_config(values: Mapping[str, Any], datasets: Iterable[str]) -> RunConfig:
    """Validate the form exactly as `tuneforge train` validates a file (ConfigError on any bad value)."""
    return load_config(raw_config(values, datasets))


def config_yaml(cfg: RunConfig) -> str:
    """The shortest YAML that loads back into `cfg`: keys that differ from the defaults, plus ALWAYS_WRITTEN."""
    minimal = cfg.model_dump(mode="json", exclude_defaults=True)
    full = cfg.model_dump(mode="json")
    for key in ALWAYS_WRITTEN:
        *parents, last = key.split(".")
        src, dst = full, minimal
        for part in parents:
            src = src[part]
            dst = dst.setdefault(part, {})
        dst[last] = src[last]
    minimal["method"] = {"name": full["method"]["name"], **minimal["method"]}  # the method's name leads
    order = list(full)  # sections in the config's own order
    minimal = {k: minimal[k] for k in sorted(minimal, key=order.index)}
    text = yaml.safe_dump(minimal, sort_keys=False, allow_unicode=True)
    # never show a file that means something else
    if load_config(yaml.safe_load(text)) != cfg:
        text = cfg.to_yaml()
    return text


def dataset_names(dataset_dir: str | None) -> list[str]:
    """Registered dataset names: the user's dataset_info.json (if any) first, then the shipped ones."""
    names: list[str] = []
    folder = Path(dataset_dir).expanduser() if dataset_dir else None
    for path in registries(str(folder) if folder and folder.is_dir() else None):
        for name in load_info(path):
            if name not in names:
                names.append(name)
    return names


class FormFileExistsError(ConfigError, FileExistsError):
    """The form's config file would replace a file the web UI did not write."""


def write_config(cfg: RunConfig, text: str) -> Path:
    """Write the form's YAML under <output.dir>/webui/<name>.yaml (the run folder itself is the run's to create).

    A file there that the web UI did not write is never replaced.
    """
    folder = Path(cfg.output.dir) / "webui"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cfg.name}.yaml"
    header = WEBUI_HEADER.format(path=path)
    if path.exists() and not path.read_text(encoding="utf-8").startswith(header.split(";")[0]):
        raise FormFileExistsError(f"{path} exists and was not written by the web UI; choose another `name`")
    path.write_text(header + text, encoding="utf-8")
    return path


def free_name(runs_dir: str, stem: str = "webui") -> str:
    """The first `stem-N` with no run folder under runs_dir."""
    n = 1
    while (Path(runs_dir) / f"{stem}-{n}").exists():
        n += 1
    return f"{stem}-{n}"


__all__ = [
    "FIELDS",
    "KEYS",
    "SECTIONS",
    "STAGE_SECTIONS",
    "FieldSpec",
    "applies",
    "build_config",
    "coerce",
    "config_yaml",
    "dataset_names",
    "defaults",
    "display",
    "field_info",
    "free_name",
    "kind_of",
    "method_choices",
    "raw_config",
    "section_title",
    "write_config",
]
