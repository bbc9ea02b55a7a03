"""PII scrubbing: typed placeholders in records and files, the mapping beside the output, a report.

`Scrubber.record(record)` replaces what pii.py's rules and the optional NER backend (pii_ner.py) find in every
string of a record, nested dicts and lists included; keys and non-strings stay as they are. A record is one
sample: its placeholders are numbered per type across all its fields and turns (`<EMAIL_1>`, `<EMAIL_2>`), one
value (in its normal form) keeps one placeholder, and numbering starts again in the next record.

`scrub_files(inputs, out)` is `tuneforge data scrub INPUT... --out DIR`: each file is written back in its own
layout (json, jsonl, csv, parquet, txt) under DIR; DIR/scrub/mapping.jsonl (placeholder -> original, per file
and row) and DIR/scrub/report.json sit in a subfolder, so a dataset path pointing at DIR never reads them.
`data.scrub: true` runs the same Scrubber on every record the data pipeline reads, before formatting and
tokenizing (data/build.py); that writes counts to data_stats.json and no mapping (the originals stay out of the
run folder). `python -m tuneforge.data.scrub --evaluate FILE` measures the detectors (pii_eval.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.pii import (
    ALL_TYPES,
    DEFAULT_PHONE_REGIONS,
    PERSON,
    RULES,
    Finding,
    Rules,
    check_installed,
    check_regions,
    find_all,
)
from tuneforge.data.pii import parse_types as parse_types
from tuneforge.data.pii_ner import NerBackend, load_ner
from tuneforge.data.schema import DataError
from tuneforge.data.sources import READERS, TSV_COLUMNS, Record, data_files
from tuneforge.errors import unreadable_text
from tuneforge.utils.progress import progress_bar

log = logging.getLogger("tuneforge.data")

META_DIR = "scrub"  # DIR/scrub/: not a data file of DIR, so `path: DIR` reads only the scrubbed files
MAPPING = "mapping.jsonl"
REPORT = "report.json"
_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")


@dataclass(frozen=True)
class ScrubSettings:
    """What to detect: `types` (None: every rule type, and PERSON when `ner` is set), the NER backend and its
    spaCy pipeline, and the regions whose national phone formats are read."""

    types: tuple[str, ...] | None = None
    ner: str | None = None
    ner_model: str | None = None
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS

    def resolved_types(self) -> tuple[str, ...]:
        if self.types is None:
            return tuple(t for t in ALL_TYPES if t != PERSON or self.ner)
        if PERSON in self.types and not self.ner:
            raise DataError("PII type PERSON needs an NER backend (--ner spacy or --ner presidio; data.scrub_ner)")
        return self.types


@dataclass(frozen=True)
class Replacement:
    """One replaced value: `field` is its place in the record (messages[1].content), start/end its offsets in
    that field's original text."""

    placeholder: str
    type: str
    original: str
    field: str
    start: int
    end: int


@dataclass
class Scrubber:
    settings: ScrubSettings = field(default_factory=ScrubSettings)
    ner: NerBackend | None = None  # None with settings.ner set: loaded from NER_BACKENDS
    counts: Counter[str] = field(default_factory=Counter)  # findings per type, over every record scrubbed
    records: int = 0
    changed: int = 0

    def __post_init__(self) -> None:
        check_installed()
        types = self.settings.resolved_types()
        self.rules = Rules(types, tuple(r.upper() for r in self.settings.phone_regions))
        check_regions(self.rules.phone_regions)
        if self.ner is None and self.settings.ner and PERSON in types:
            self.ner = load_ner(self.settings.ner, self.settings.ner_model)
        self.persons = PERSON in types and self.ner is not None

    def record(self, record: Record) -> tuple[Record, list[Replacement]]:
        """The record with its PII replaced, and what was replaced."""
        fields: list[tuple[str, str]] = []

        def collect(path: str, text: str) -> str:
            fields.append((path, text))
            return text

        _map_strings(record, "", collect)
        texts = [text for _, text in fields]
        numbers = _Numbering(texts)
        replacements: list[Replacement] = []
        new: list[str] = []
        for (path, text), findings in zip(fields, self.find(texts), strict=True):
            parts, last = [], 0
            for f in findings:
                placeholder = numbers.placeholder(f)
                parts += [text[last : f.start], placeholder]
                replacements.append(Replacement(placeholder, f.type, text[f.start : f.end], path, f.start, f.end))
                last = f.end
            new.append("".join(parts) + text[last:])
        self.records += 1
        self.changed += bool(replacements)
        self.counts.update(r.type for r in replacements)
        scrubbed = iter(new)  # the second walk meets the strings in the order the first collected them
        return _map_strings(record, "", lambda path, text: next(scrubbed)), replacements

    def summary(self) -> dict[str, Any]:
        """What data_stats.json records of data.scrub: the backend and the counts, never the values."""
        ner = self.ner.name + " (" + self.ner.model + ")" if self.persons and self.ner is not None else "none"
        found = {t: self.counts[t] for t in ALL_TYPES if self.counts[t]}
        return {"ner": ner, "records": self.records, "records_changed": self.changed, "findings": found}

    def find(self, texts: Sequence[str]) -> list[list[Finding]]:
        """The findings of each text, overlaps resolved (pii.find_all); names from the NER backend."""
        persons: list[list[Finding]] = [[] for _ in texts]
        if self.persons and self.ner is not None:
            # single words are not sent: role and tag values ("human", "gpt") are structure, not names
            asked = [i for i, t in enumerate(texts) if len(t.split()) > 1]
            for i, found in zip(asked, self.ner.persons([texts[i] for i in asked]), strict=True):
                persons[i] = found
        return [find_all(text, self.rules, extra) for text, extra in zip(texts, persons, strict=True)]


class _Numbering:
    """Placeholders of one record: one per (type, normal form), numbered per type from 1, past any placeholder
    the record already holds (a file scrubbed twice keeps its old placeholders distinct from the new)."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.next: Counter[str] = Counter()
        for text in texts:
            for m in _PLACEHOLDER.finditer(text):
                self.next[m.group(1)] = max(self.next[m.group(1)], int(m.group(2)))
        self.given: dict[tuple[str, str], str] = {}

    def placeholder(self, f: Finding) -> str:
        if (f.type, f.key) not in self.given:
            self.next[f.type] += 1
            self.given[(f.type, f.key)] = f"<{f.type}_{self.next[f.type]}>"
        return self.given[(f.type, f.key)]


def _map_strings(value: Any, path: str, fn: Callable[[str, str], str]) -> Any:
    """`value` with fn(path, text) applied to each string inside it; dicts and lists rebuilt, the rest kept."""
    if isinstance(value, str):
        return fn(path, value)
    if isinstance(value, dict):
        return {k: _map_strings(v, f"{path}.{k}" if path else str(k), fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, f"{path}[{i}]", fn) for i, v in enumerate(value)]
    return value


def scrubber_for(data: Any) -> Scrubber | None:
    """The Scrubber of a DataConfig's `scrub` / `scrub_ner`, or None when data.scrub is off."""
    if not data.scrub:
        return None
    ner = None if data.scrub_ner == "none" else data.scrub_ner
    return Scrubber(ScrubSettings(ner=ner))


# --- files: tuneforge data scrub


def scrub_files(
    inputs: Sequence[str | Path], out: str | Path, settings: ScrubSettings, overwrite: bool = False
) -> dict[str, Any]:
    """Scrub every data file of `inputs` into `out` (never in place); returns the report also written there."""
    out = Path(out).expanduser()
    files = _input_files(inputs, out)
    _check_out(out, overwrite)
    scrubber = Scrubber(settings)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"  # a failure half-way leaves nothing behind
    shutil.rmtree(partial, ignore_errors=True)
    (partial / META_DIR).mkdir(parents=True)
    report: dict[str, Any] = {"settings": _settings_json(scrubber), "files": {}, "total": {}}
    try:
        with (partial / META_DIR / MAPPING).open("w", encoding="utf-8") as mapping:
            os.chmod(mapping.name, 0o600)  # it holds the originals
            bar = progress_bar(len(files), "scrubbing", unit="file", enabled=len(files) > 1)
            for file in files:
                before = (Counter(scrubber.counts), scrubber.records, scrubber.changed)
                try:
                    _scrub_file(file, partial / file.name, scrubber, mapping)
                except UnicodeDecodeError as e:  # txt is read here, not by sources.py, which names the file
                    raise DataError(str(unreadable_text(file, e))) from None
                found = scrubber.counts - before[0]
                report["files"][file.name] = {
                    "input": str(file),
                    "rows": scrubber.records - before[1],
                    "rows_changed": scrubber.changed - before[2],
                    "findings": {t: found[t] for t in ALL_TYPES if found[t]},
                }
                bar.update()
            bar.close()
        report["total"] = {t: scrubber.counts[t] for t in ALL_TYPES if scrubber.counts[t]}
        report["mapping"] = f"{META_DIR}/{MAPPING}"
        (partial / META_DIR / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def _input_files(inputs: Sequence[str | Path], out: Path) -> list[Path]:
    if not inputs:
        raise DataError("tuneforge data scrub needs input files or folders: tuneforge data scrub INPUT... --out DIR")
    files = [f for i in inputs for f in data_files(Path(i).expanduser())]
    where = out.resolve()
    for f in files:
        if f.resolve().parent == where or where in f.resolve().parents:
            raise DataError(f"--out {out} holds the input {f}: scrub never writes in place; choose a new folder")
    names = Counter(f.name for f in files)
    if clash := [n for n, c in names.items() if c > 1]:
        raise DataError(f"two inputs are named {clash[0]!r}; their outputs would collide in --out: scrub them apart")
    return files


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"output folder {out} exists and is not empty; choose a new one or pass --overwrite")


def _scrub_file(path: Path, dest: Path, scrubber: Scrubber, mapping: Any) -> None:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _scrub_parquet(path, dest, scrubber, mapping)
    if suffix == ".txt":  # lines, blank ones kept: the reader drops them, the layout should not
        with path.open(encoding="utf-8-sig") as f, dest.open("w", encoding="utf-8") as w:
            for n, line in enumerate(f, start=1):
                body = line.rstrip("\r\n")
                if body.strip():
                    body = _scrub_row(scrubber, {"text": body}, path, n, f"{path}:{n}", mapping)["text"]
                w.write(body + line[len(line.rstrip("\r\n")) :])
        return None
    records = _rows(path, scrubber, mapping)
    if suffix == ".csv":
        return _write_csv(path, dest, records)
    if suffix == ".tsv":
        return _write_tsv(path, dest, records)
    layout, key, obj = _json_layout(path) if suffix == ".json" else ("lines", None, None)
    with dest.open("w", encoding="utf-8") as w:
        if layout == "lines":
            for rec in records:
                w.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            rows = list(records)
            data = rows if obj is None else {k: rows if k == key else v for k, v in obj.items()}
            w.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    return None


def _rows(path: Path, scrubber: Scrubber, mapping: Any) -> Iterator[Record]:
    """The scrubbed records of one file, read by sources.py (its errors name the file and row)."""
    for row, (source, record) in enumerate(READERS[path.suffix.lower()](path), start=1):
        if not isinstance(record, dict):
            raise DataError(f"{source}: expected an object with named fields, got {record!r:.80}")
        yield _scrub_row(scrubber, record, path, row, source, mapping)


def _scrub_row(scrubber: Scrubber, record: Record, path: Path, row: int, source: str, mapping: Any) -> Record:
    new, replacements = scrubber.record(record)
    if replacements:
        line = {"file": path.name, "input": str(path), "row": row, "source": source}
        mapping.write(json.dumps({**line, "replacements": [asdict(r) for r in replacements]}, ensure_ascii=False))
        mapping.write("\n")
    return new


def _json_layout(path: Path) -> tuple[str, str | None, dict[str, Any] | None]:
    """How a .json file holds its records: ("list", None, None); ("object", key, the object) for an object with
    one list of records beside other keys (kept as they are); ("lines", None, None) for JSON lines."""
    text = path.read_text(encoding="utf-8-sig").lstrip()
    if not text.startswith("{"):
        return "list", None, None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return "lines", None, None  # sources.py read it line by line (or named its bad line)
    key = next(k for k, v in data.items() if isinstance(v, list))  # sources.py checked there is exactly one
    return "object", key, data


def _write_csv(path: Path, dest: Path, records: Iterator[Record]) -> None:
    import csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), [])
    with dest.open("w", encoding="utf-8", newline="") as w:
        writer = csv.DictWriter(w, fieldnames=header, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


def _write_tsv(path: Path, dest: Path, records: Iterator[Record]) -> None:
    """The scrubbed rows in the file's own layout: its header row if it had one (SST-2), none if not (AG News);
    tab-separated, unquoted, as sources.py reads it back."""
    import csv

    with path.open(encoding="utf-8-sig", newline="") as f:
        first = next((row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if any(row)), [])
    header = bool(first) and first[-1].strip().lower() == "label"
    names = [c.strip() for c in first] if header else list(TSV_COLUMNS)
    with dest.open("w", encoding="utf-8", newline="") as w:
        if header:
            w.write("\t".join(first) + "\n")
        for n, rec in enumerate(records, start=1):
            cells = [str(rec.get(k, "")) for k in names]
            bad = next((c for c in cells if "\t" in c or "\n" in c or "\r" in c), None)
            if bad is not None:
                raise DataError(f"{path}: record {n}: a scrubbed value holds a tab or line break: {bad!r:.80}")
            w.write("\t".join(cells) + "\n")


def _scrub_parquet(path: Path, dest: Path, scrubber: Scrubber, mapping: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(path).schema_arrow
    with pq.ParquetWriter(dest, schema) as writer:
        batch: list[Record] = []
        for record in _rows(path, scrubber, mapping):
            batch.append(record)
            if len(batch) == 1024:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def _settings_json(scrubber: Scrubber) -> dict[str, Any]:
    s = scrubber.settings
    ner = scrubber.ner
    return {
        "types": list(scrubber.rules.types),
        "ner": s.ner,
        "ner_model": ner.model if ner is not None else None,
        "phone_regions": list(scrubber.rules.phone_regions),
    }


def report_table(report: dict[str, Any]) -> str:
    """The report as a readable table: one row per file, one column per type found, rows changed and the total."""
    types = list(report["total"]) or ["-"]
    head = ["file", "rows", "changed", *types]
    rows = [
        [name, str(f["rows"]), str(f["rows_changed"]), *(str(f["findings"].get(t, 0)) for t in types)]
        for name, f in report["files"].items()
    ]
    files = report["files"].values()
    total = [str(sum(f[k] for f in files)) for k in ("rows", "rows_changed")]
    rows.append(["total", *total, *(str(report["total"].get(t, 0)) for t in types)])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tuneforge.data.scrub --evaluate FILE`: precision / recall per type on a labelled set."""
    from tuneforge.data.pii_eval import evaluate, format_table

    p = argparse.ArgumentParser(prog="python -m tuneforge.data.scrub", description=main.__doc__)
    p.add_argument("--evaluate", required=True, metavar="FILE", help="presidio-research JSON (full_text + spans)")
    p.add_argument("--match", choices=["overlap", "exact"], default="overlap", help="span matching rule")
    p.add_argument("--ner", choices=["spacy", "presidio"], help="NER backend for PERSON (default: none)")
    p.add_argument("--ner-model", help="spaCy pipeline for the NER backend (default: en_core_web_sm)")
    p.add_argument("--phone-regions", help=f"phone regions read (default: {','.join(DEFAULT_PHONE_REGIONS)})")
    p.add_argument("--limit", type=int, help="the first N samples only")
    args = p.parse_args(argv)
    regions = tuple(r.strip() for r in args.phone_regions.split(",")) if args.phone_regions else DEFAULT_PHONE_REGIONS
    try:
        result = evaluate(
            Path(args.evaluate),
            ScrubSettings(ner=args.ner, ner_model=args.ner_model, phone_regions=regions),
            args.match,
            args.limit,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result), end="")
    return 0


__all__ = ["RULES", "Replacement", "ScrubSettings", "Scrubber", "report_table", "scrub_files", "scrubber_for"]

if __name__ == "__main__":
    raise SystemExit(main())
