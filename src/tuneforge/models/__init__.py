"""Models: the embedded default model (`embedded`) and tokenizer / model loading (`loader`).

Submodules are imported explicitly (`from tuneforge.models.loader import load_model`) so that cheap callers,
such as `tuneforge doctor` asking for the cache folder, never pay for importing transformers.
"""

from __future__ import annotations

from tuneforge.errors import TuneforgeError


class ModelError(TuneforgeError, ValueError):
    """A model or tokenizer that cannot be loaded; the message names the path and what to do instead."""


__all__ = ["ModelError"]
