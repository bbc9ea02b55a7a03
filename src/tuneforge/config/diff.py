"""Where two dumps of a run configuration differ: what resuming a run (`tuneforge train --resume`) and rerunning
a comparison in its folder (`tuneforge compare`) check against the config they saved.

A saved dump written by an older tuneforge lacks the settings added since; such a key is no difference when the
current value is that setting's default (read from a dump of the default RunConfig at the same place) or empty
(None, [], {}, false), so upgrading tuneforge does not stop a run or a comparison from resuming. A list compares
item by item when both have the same length (a dataset entry gains a key the same way).
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _defaults() -> dict[str, Any]:
    from tuneforge.config.run import RunConfig

    return RunConfig().model_dump(mode="json")


def _empty(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {}


def config_diff(saved: Any, current: Any, prefix: str = "", defaults: Any = ...) -> list[str]:
    """The dotted paths (list items as `[i]`) at which `current` differs from `saved`."""
    if defaults is ...:
        defaults = _defaults()
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for k in dict.fromkeys([*saved, *current]):
            here = defaults.get(k) if isinstance(defaults, dict) else None
            if k not in saved and (_empty(current[k]) or current[k] == here):
                continue  # a setting newer than the saved dump, left at its default
            out += config_diff(saved.get(k), current.get(k), f"{prefix}.{k}" if prefix else str(k), here)
        return out
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        return [
            d
            for i, (a, b) in enumerate(zip(saved, current, strict=True))
            for d in config_diff(a, b, f"{prefix}[{i}]", None)
        ]
    return [] if saved == current else [prefix or "(the whole config)"]


__all__ = ["config_diff"]
