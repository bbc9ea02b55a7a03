"""Leakage and trust audits of trained runs (docs/privacy.md)."""
