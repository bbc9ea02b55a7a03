"""Pieces shared by the method families: the error type and params coercion."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from tuneforge.config import MethodSection

P = TypeVar("P", bound=MethodSection)


class MethodError(ValueError):
    """A method that cannot be applied to this model; the message names the setting and what is available."""


def coerce(params: MethodSection, cls: type[P]) -> P:
    """`params` as the method's own params model.

    `config.load` without a method table leaves a bare MethodSection (only `name`), and callers may build
    params by hand; validating here means an apply function always sees checked, fully defaulted fields.
    """
    if isinstance(params, cls):
        return params
    raw = {**params.model_dump(), **(params.model_extra or {})}
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise MethodError(f"invalid method parameters for {raw.get('name')!r}: {e}") from None


def short_names(names: list[str]) -> str:
    """A sorted, de-duplicated, comma-separated list for error messages."""
    return ", ".join(sorted(set(names)))
