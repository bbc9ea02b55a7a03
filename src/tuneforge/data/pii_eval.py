"""Precision and recall of the PII detectors on a labelled set (presidio-research's synth_dataset_v2.json layout).

Each sample is {"full_text": ..., "spans": [{"entity_type", "start_position", "end_position"}, ...]}. The set's
entity types are mapped to ours (GOLD_TYPES); a type of the set with no detector of ours is listed as not
detected with its count, never folded into another. The predictions are exactly what scrubbing replaces
(Scrubber.find: the rules, the NER backend, overlaps resolved).

Matching is one to one per type: "overlap" pairs a predicted span with a gold span of the same type when they
share at least one character; "exact" when start and end are equal. A prediction overlapping a gold span of
another type, or none, is a false positive.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.pii import ALL_TYPES
from tuneforge.data.schema import DataError
from tuneforge.data.scrub import Scrubber, ScrubSettings
from tuneforge.utils.progress import progress_bar

# the labelled set's type -> ours
GOLD_TYPES = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}


@dataclass
class EvalResult:
    match: str
    samples: int
    chars: int
    seconds: float
    settings: dict[str, Any]
    support: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)
    matched: Counter[str] = field(default_factory=Counter)
    undetected: Counter[str] = field(default_factory=Counter)  # the set's types we have no detector for


def load_set(path: Path, limit: int | None = None) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """(text, [(set type, start, end)]) per sample; a malformed sample is a DataError naming its index."""
    if not path.is_file():
        raise DataError(f"labelled set {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of samples with full_text and spans")
    out = []
    for i, sample in enumerate(data[:limit] if limit else data, start=1):
        try:
            text = sample["full_text"]
            spans = [(s["entity_type"], int(s["start_position"]), int(s["end_position"])) for s in sample["spans"]]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{path}: sample {i}: needs full_text and spans with entity_type, start_position, "
                f"end_position ({type(e).__name__}: {e})"
            ) from None
        out.append((text, spans))
    return out


def evaluate(path: Path, settings: ScrubSettings, match: str = "overlap", limit: int | None = None) -> EvalResult:
    samples = load_set(path, limit)
    scrubber = Scrubber(settings)
    ours = set(scrubber.rules.types)
    result = EvalResult(
        match,
        len(samples),
        sum(len(t) for t, _ in samples),
        0.0,
        {
            "types": list(scrubber.rules.types),
            "ner": settings.ner,
            "ner_model": scrubber.ner.model if scrubber.ner is not None else None,
            "phone_regions": list(scrubber.rules.phone_regions),
        },
    )
    start = time.perf_counter()
    bar = progress_bar(len(samples), "evaluating PII detectors", unit="sample")
    for b in range(0, len(samples), 64):
        batch = samples[b : b + 64]
        for (_, gold), found in zip(batch, scrubber.find([t for t, _ in batch]), strict=True):
            predicted = [(f.type, f.start, f.end) for f in found]
            _score(result, gold, predicted, ours)
        bar.update(len(batch))
    bar.close()
    result.seconds = time.perf_counter() - start
    return result


def _score(
    result: EvalResult, gold: list[tuple[str, int, int]], predicted: list[tuple[str, int, int]], ours: set[str]
) -> None:
    mapped = []
    for set_type, s, e in gold:
        ours_type = GOLD_TYPES.get(set_type)
        if ours_type is None or ours_type not in ours:
            result.undetected[set_type] += 1
        else:
            mapped.append((ours_type, s, e))
            result.support[ours_type] += 1
    result.predicted.update(t for t, _, _ in predicted)
    free = list(predicted)
    for t, s, e in mapped:
        for p in free:
            same = (p[1], p[2]) == (s, e) if result.match == "exact" else p[1] < e and s < p[2]
            if p[0] == t and same:
                result.matched[t] += 1
                free.remove(p)
                break


def format_table(r: EvalResult) -> str:
    head = ["type", "support", "predicted", "precision", "recall", "F1"]
    rows = []
    types = [t for t in ALL_TYPES if r.support[t] or r.predicted[t]]
    for t in [*types, "all"]:
        support = sum(r.support.values()) if t == "all" else r.support[t]
        predicted = sum(r.predicted[x] for x in types) if t == "all" else r.predicted[t]
        tp = sum(r.matched.values()) if t == "all" else r.matched[t]
        p = tp / predicted if predicted else float("nan")
        rec = tp / support if support else float("nan")
        f1 = 2 * p * rec / (p + rec) if predicted and support and p + rec else float("nan")
        rows.append([t, str(support), str(predicted), *(_pct(x) for x in (p, rec, f1))])
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True)))
        for x in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s = r.settings
    lines.insert(
        0,
        f"{r.samples} samples, {r.chars} characters, span matching: {r.match}; ner: {s['ner'] or 'none'}"
        f"{' (' + s['ner_model'] + ')' if s['ner_model'] else ''}; phone regions: "
        f"{','.join(s['phone_regions'])}; {r.seconds:.1f} s ({r.chars / max(r.seconds, 1e-9):,.0f} chars/s)",
    )
    missing = ", ".join(f"{t} ({n})" for t, n in r.undetected.most_common())
    lines.append(f"not detected (the set's types we have no detector for, with their spans): {missing or 'none'}")
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


__all__ = ["GOLD_TYPES", "EvalResult", "evaluate", "format_table", "load_set"]
