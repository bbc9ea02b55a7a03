"""What every verb shares: loading its config (a file or the defaults, then `key=value` overrides)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig


def load_config(path: str | Path | Mapping[str, Any] | None, overrides: Sequence[str]) -> RunConfig:
    from tuneforge.stages import load_config as load_with_tables

    return load_with_tables(path or {}, overrides)


def run_overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "resume", False):
        extra.append("train.resume=true")
    if getattr(args, "overwrite", False):
        extra.append("output.overwrite=true")
    return extra


def verb_config(
    verb: str,
    config: str | Mapping[str, Any] | None,
    words: Sequence[str],
    args: argparse.Namespace,
    presets: dict[str, object],
) -> RunConfig:
    """A workflow verb's config: CONFIG (or the defaults), the verb's presets where it leaves a key unset, then
    the old flags (each printing its keys) and the key=value words."""
    from tuneforge.config import ConfigError, old_flag_overrides, preset_overrides

    paths = [w for w in words if not is_override(w)]
    if paths and config:
        raise ConfigError(f"give the config once: --config {config} or {paths[0]}")
    if len(paths) > 1:
        raise ConfigError(f"one CONFIG file at most, got {', '.join(paths)} (overrides look like key.path=value)")
    config = config or (paths[0] if paths else None)
    extra, notes = old_flag_overrides(verb, vars(args))
    for note in notes:
        print(note, file=sys.stderr)
    extra += [w for w in words if is_override(w)]

    def build(items: list[str]) -> RunConfig:
        return load_config(config, items)

    cfg = build(extra)
    preset = preset_overrides(cfg, presets)
    return build([*preset, *extra]) if preset else cfg


def prepare_sections(path: str) -> dict[str, Any]:
    """The `prepare:` and `rag:` sections of a config file, the only ones `data prepare` reads: a training
    config's other sections may name what prepare is about to write (data.dataset_dir must exist to load)."""
    import yaml

    from tuneforge.config import ConfigError

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got {type(raw).__name__}")
    return {k: raw[k] for k in ("prepare", "rag") if k in raw}


def is_override(word: str) -> bool:
    return re.match(r"^[A-Za-z_][\w.]*=", word) is not None
