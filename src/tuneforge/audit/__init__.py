"""Leakage and trust audits of trained runs (docs/privacy.md)."""

from tuneforge.errors import TuneforgeError


class AuditError(TuneforgeError, ValueError):
    """An audit that cannot run as asked: the message names the run, the file or the flag at fault."""


__all__ = ["AuditError"]
