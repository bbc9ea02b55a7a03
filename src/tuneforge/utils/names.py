"""The " (did you mean 'x'?)" hint every unknown name gets (config keys, arm kinds, rewards, methods, datasets)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """` (did you mean 'closest'?)` for the nearest known name, or "" when none is near (difflib, cutoff 0.5)."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
