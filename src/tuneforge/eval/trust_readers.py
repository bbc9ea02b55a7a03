"""Readers of the trust sets (formats crows_pairs, bbq, refusal): CrowS-Pairs' minimal pairs, BBQ's
ambiguous and disambiguated questions, and requests to answer or refuse. See eval/readers.py for the table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.eval.example import LETTERS, EvalError, Example, field_of, records


def _whole_set(path: Path, split: str, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if split != "test":
        raise EvalError(f"{name} has no splits (every item is a test item); drop split={split!r}")
    return records(path)


def read_crows_pairs(path: Path, split: str) -> list[Example]:
    """CrowS-Pairs (Nangia et al. 2020): sent_more is the more stereotyping sentence of each minimal pair."""
    out: list[Example] = []
    for source, r in _whole_set(path, split, "CrowS-Pairs"):
        more, less = str(field_of(r, "sent_more", source)), str(field_of(r, "sent_less", source))
        direction = str(field_of(r, "stereo_antistereo", source)).strip()
        if direction not in ("stereo", "antistereo"):
            raise EvalError(f"{source}: stereo_antistereo={direction!r} is neither 'stereo' nor 'antistereo'")
        item = str(r.get("") or r.get("id") or len(out))
        bias = str(field_of(r, "bias_type", source)).strip()
        out.append(Example(item, more, choices=(more, less), subject=bias, meta={"direction": direction}))
    return out


def _group_labels(label: str) -> set[str]:
    # BBQ's answer_info labels are group names, some with a gender prefix ("F-Black", "M-Latino"), compared with
    # additional_metadata.stereotyped_groups case-insensitively, with and without the prefix.
    low = label.strip().lower()
    return {low, low.split("-", 1)[1]} if re.match(r"^[mf]-", low) else {low}


def _bbq_roles(r: dict[str, Any], source: str) -> tuple[int, int | None]:
    """(index of the 'unknown' answer, index of the answer naming a stereotyped group, None if not exactly one)."""
    info = field_of(r, "answer_info", source)
    labels = [str(info[f"ans{k}"][1]) for k in range(3)]
    unknown = [k for k, lab in enumerate(labels) if lab.strip().lower() == "unknown"]
    if len(unknown) != 1:
        raise EvalError(f"{source}: answer_info has {len(unknown)} 'unknown' answers, expected one ({labels})")
    groups = {g.strip().lower() for g in field_of(r, "additional_metadata", source).get("stereotyped_groups", [])}
    target = [k for k, lab in enumerate(labels) if k != unknown[0] and _group_labels(lab) & groups]
    return unknown[0], target[0] if len(target) == 1 else None


def read_bbq(path: Path, split: str) -> list[Example]:
    """BBQ (Parrish et al. 2022): context + question, three answers, one of them 'unknown'."""
    out: list[Example] = []
    for source, r in _whole_set(path, split, "BBQ"):
        choices = tuple(str(field_of(r, f"ans{k}", source)) for k in range(3))
        gold = field_of(r, "label", source)
        if gold not in (0, 1, 2):
            raise EvalError(f"{source}: label {gold} is not 0, 1 or 2")
        condition = str(field_of(r, "context_condition", source))
        polarity = str(field_of(r, "question_polarity", source))
        if condition not in ("ambig", "disambig") or polarity not in ("neg", "nonneg"):
            raise EvalError(f"{source}: context_condition={condition!r} / question_polarity={polarity!r} unknown")
        unknown, target = _bbq_roles(r, source)
        category = str(field_of(r, "category", source))
        question = f"{str(field_of(r, 'context', source)).strip()}\n{str(field_of(r, 'question', source)).strip()}"
        meta = {"condition": condition, "polarity": polarity, "unknown": unknown, "target": target}
        item = f"{category}/{r.get('example_id', len(out))}"
        out.append(Example(item, question, LETTERS[gold], choices, gold, subject=category, meta=meta))
    return out


def _flag(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false", "1", "0"):
        return str(value).strip().lower() in ("true", "1")
    raise EvalError(f"{source}: harmful={value!r} is not true or false")


def read_refusal(path: Path, split: str) -> list[Example]:
    """Requests to answer or refuse: `prompt`, `harmful` (true: should be refused), optional `id`, `category`."""
    out: list[Example] = []
    for source, r in records(path):
        harmful = _flag(field_of(r, "harmful", source), source)
        item = str(r.get("id", len(out)))
        meta = {"harmful": harmful, "category": str(r.get("category") or "")}
        out.append(Example(item, str(field_of(r, "prompt", source)), "refuse" if harmful else "answer", meta=meta))
    return out
