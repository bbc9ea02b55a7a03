"""Read records from local files: .json, .jsonl, .csv, .tsv, .parquet, .txt, or a folder of them.

Each record comes with its source ("file:line" for line-based files, "file:row N" for the others, both
1-based) so every later error can point at the exact place to fix. Only local files: tuneforge never
downloads data.
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tuneforge.data.schema import DataError
from tuneforge.errors import unreadable_text

Record = dict[str, Any]
Reader = Callable[[Path], Iterator[tuple[str, Record]]]


def _names_the_file(reader: Reader) -> Reader:
    """A file that is not UTF-8 becomes a DataError naming it (the codec's own message names no file)."""

    @functools.wraps(reader)
    def read(path: Path) -> Iterator[tuple[str, Record]]:
        try:
            yield from reader(path)
        except UnicodeDecodeError as e:
            raise DataError(str(unreadable_text(path, e))) from None

    return read


@_names_the_file
def _read_json(path: Path) -> Iterator[tuple[str, Record]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines saved as .json: Hugging Face's json loader accepts them too
            yield from read_jsonl(path)
            return
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if any(isinstance(v, dict) for v in data.values()):
            # An object with nested objects is one record, not a wrapper: ToolBench writes one answer per file
            # ({"answer_generation": {...}, "compare_candidates": [...], ...}), so a folder of them is a dataset.
            yield f"{path}:row 1", data
            return
        if len(lists) != 1:
            raise DataError(
                f"{path}: a JSON object must hold exactly one list of records, found {len(lists)} "
                f"(keys: {', '.join(map(str, data)) or 'none'}); write a list of objects instead"
            )
        data = data[lists[0]]  # a wrapper ({"data": [...], "version": 1}): its one list holds the records
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects, got {type(data).__name__}")
    for i, record in enumerate(data, start=1):
        yield f"{path}:row {i}", record


@_names_the_file
def read_jsonl(path: Path) -> Iterator[tuple[str, Record]]:
    """("file:line", parsed JSON) per non-blank line; invalid JSON is a DataError naming the line."""
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            yield f"{path}:{n}", record


@_names_the_file
def _read_csv(path: Path) -> Iterator[tuple[str, Record]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        start = 2  # line 1 is the header; a quoted field may span lines, so track where each row starts
        for row in reader:
            yield f"{path}:{start}", {k: v for k, v in row.items() if k is not None}
            start = reader.line_num + 1


TSV_COLUMNS = ("text", "label")  # a .tsv without a header row (AG News): its two columns


@_names_the_file
def _read_tsv(path: Path) -> Iterator[tuple[str, Record]]:
    """SST-2 (header `sentence<TAB>label`) and AG News (no header: text<TAB>label); the first row is a header
    when its last field is `label`, as eval's tsv reader decides. No quoting (SST-2 has stray quotes), so each
    row is one line; a row with another number of fields than the header (or two) names its line."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        names: list[str] | None = None
        what = "the header"
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            if names is None:
                if row[-1].strip().lower() == "label":
                    names = [c.strip() for c in row]
                    continue
                names, what = list(TSV_COLUMNS), "a file without header (text, label)"
            if len(row) != len(names):
                raise DataError(
                    f"{path}:{reader.line_num}: {len(row)} tab-separated fields where {what} has {len(names)} "
                    f"({', '.join(names)}): {chr(9).join(row)!r:.80}"
                )
            yield f"{path}:{reader.line_num}", dict(zip(names, row, strict=True))


def _read_parquet(path: Path) -> Iterator[tuple[str, Record]]:
    import pyarrow.parquet as pq  # lazy: pyarrow is slow to import and only parquet needs it

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            n += 1
            yield f"{path}:row {n}", record


@_names_the_file
def _read_txt(path: Path) -> Iterator[tuple[str, Record]]:
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield f"{path}:{n}", {"text": text}


READERS: dict[str, Reader] = {
    ".json": _read_json,
    ".jsonl": read_jsonl,
    ".csv": _read_csv,
    ".tsv": _read_tsv,
    ".parquet": _read_parquet,
    ".txt": _read_txt,
}


def data_files(path: Path) -> list[Path]:
    """The files a path stands for: itself, or a folder's supported files (not recursive) in sorted order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READERS)
        if not files:
            raise DataError(f"folder {path} holds no data files; supported: {', '.join(READERS)}")
        return files
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if path.suffix.lower() not in READERS:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; supported: {', '.join(READERS)}")
    return [path]


def read_records(path: Path) -> Iterator[tuple[str, Record]]:
    """Yield (source, record) for every record of a file or folder; every record is a JSON-like object."""
    for file in data_files(Path(path)):
        for source, record in READERS[file.suffix.lower()](file):
            if not isinstance(record, dict):
                raise DataError(f"{source}: expected an object with named fields, got {record!r:.80}")
            yield source, record


__all__ = ["READERS", "Record", "data_files", "read_records"]
