"""Turn a DatasetSpec into files, a format and a FormatSpec, reading LLaMA-Factory's dataset_info.json as is.

A spec names either a path (read with `spec.format`; default alpaca, or text for .txt) or a registered dataset,
looked up first in the user's `data.dataset_dir/dataset_info.json`, then in the registry shipped with
tuneforge (`data/synthetic/dataset_info.json`). Entry keys keep LLaMA-Factory's meaning, including one
quirk users rely on: an entry that gives `columns` (or `tags`) switches off every column (tag) it does not
list, so `{"columns": {"prompt": "text"}}` reads only the text column.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import DatasetSpec
from tuneforge.data.formats import DEFAULT_COLUMNS, DEFAULT_TAGS, FORMATS, FormatSpec, make_format_spec
from tuneforge.data.schema import DataError
from tuneforge.data.sources import data_files

INFO_FILE = "dataset_info.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "synthetic"
# Entries that load from somewhere other than a local file; tuneforge never downloads or runs scripts.
REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
MEDIA_COLUMNS = ("images", "videos", "audios")
HELD_OUT_SPLITS = ("dev", "test", "val", "valid", "validation")  # split files eval scores (eval.readers.split_file)


@dataclass(frozen=True)
class ResolvedDataset:
    name: str
    files: list[Path]
    format: str
    format_spec: FormatSpec
    ranking: bool = False  # a preference dataset (chosen/rejected), not usable for SFT
    num_samples: int | None = None  # LLaMA-Factory's `num_samples`: resample the dataset to this size
    defined_in: str = ""  # the dataset_info.json that defined it, or "path"

    @property
    def kto(self) -> bool:
        return bool(self.format_spec.columns.get("kto_tag"))


def resolve(spec: DatasetSpec, dataset_dir: str | None) -> ResolvedDataset:
    resolved = _resolve(spec, dataset_dir)
    held_out = [f.name for f in resolved.files if f.stem.lower() in HELD_OUT_SPLITS]
    if resolved.format == "classification" and len(resolved.files) > 1 and held_out:
        # SST-2's and AG News' folders hold dev/test beside train: reading the folder would train on what eval scores
        raise DataError(
            f"dataset {resolved.name!r} is a folder of {len(resolved.files)} files, among them {', '.join(held_out)}; "
            "format classification would train on the splits eval scores: name the training file (e.g. "
            ".../SST-2/train.tsv)"
        )
    if resolved.format == "tallrec" and len(resolved.files) > 1:
        # TALLRec's folders hold valid.json and test.json side by side: reading the folder would train on test
        raise DataError(
            f"dataset {resolved.name!r} is {len(resolved.files)} files ({', '.join(f.name for f in resolved.files)}); "
            "format tallrec trains on one split file: name it (e.g. .../book/valid.json), the test split is "
            "scored, never trained on"
        )
    return resolved


def _resolve(spec: DatasetSpec, dataset_dir: str | None) -> ResolvedDataset:
    if spec.path is not None:
        files = data_files(Path(spec.path).expanduser())
        # .txt holds only text; anything else defaults to alpaca, as in LLaMA-Factory
        fmt = spec.format or ("text" if all(f.suffix.lower() == ".txt" for f in files) else "alpaca")
        try:
            fs = make_format_spec(fmt, spec.columns, spec.tags, spec.system, spec.labels, spec.instruction)
        except DataError as e:
            raise DataError(f"dataset {spec.path!r}: {e}") from None
        return ResolvedDataset(spec.path, files, fmt, fs, defined_in="path")
    info_path, entry = find_entry(str(spec.name), dataset_dir)  # DatasetSpec guarantees name or path
    return _from_entry(spec, info_path, entry)


def registries(dataset_dir: str | None) -> list[Path]:
    """The dataset_info.json files to search, in order; missing ones are left out."""
    folders = [Path(dataset_dir).expanduser()] if dataset_dir else []
    folders.append(SHIPPED_DIR)
    return [f / INFO_FILE for f in folders if (f / INFO_FILE).is_file()]


def load_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object mapping dataset names to entries")
    return info


def find_entry(name: str, dataset_dir: str | None) -> tuple[Path, dict[str, Any]]:
    known: list[str] = []
    searched = registries(dataset_dir)
    for path in searched:
        info = load_info(path)
        if name in info:
            entry = info[name]
            if not isinstance(entry, dict):
                raise DataError(f"{path}: entry {name!r} must be an object, got {entry!r:.80}")
            return path, entry
        known += [k for k in info if k not in known]
    where = " or ".join(str(p) for p in searched) or "no dataset_info.json"
    if dataset_dir and not (Path(dataset_dir).expanduser() / INFO_FILE).is_file():
        where += f" (data.dataset_dir {dataset_dir} has no {INFO_FILE})"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    shown = ", ".join(known[:30]) + (f", … ({len(known) - 30} more)" if len(known) > 30 else "")
    raise DataError(
        f"dataset {name!r} is not registered in {where}; known: {shown or 'none'}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
    )


def _from_entry(spec: DatasetSpec, info_path: Path, entry: dict[str, Any]) -> ResolvedDataset:
    name = str(spec.name)
    where = f"dataset {name!r} in {info_path}"
    if "file_name" not in entry:
        remote = [f"{k}={entry[k]!r}" for k in REMOTE_KEYS if k in entry]
        if remote:
            raise DataError(
                f"{where} loads from {', '.join(remote)}, which needs network access (or a loading script); "
                f"tuneforge reads local files only: download it and set file_name in the entry"
            )
        raise DataError(f"{where} has no file_name (keys: {', '.join(entry) or 'none'})")
    fmt = spec.format or entry.get("formatting", "alpaca")
    if fmt not in FORMATS:
        raise DataError(f"{where}: unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    columns = entry.get("columns") or {}
    media = [c for c in MEDIA_COLUMNS if columns.get(c)]
    if media:
        raise DataError(f"{where} has {'/'.join(media)} columns; tuneforge trains on text only")
    merged_cols = _listed_only(columns, DEFAULT_COLUMNS[fmt]) if "columns" in entry else {}
    merged_tags = _listed_only(entry.get("tags") or {}, DEFAULT_TAGS.get(fmt, {})) if "tags" in entry else {}
    try:
        cols, tags = {**merged_cols, **spec.columns}, {**merged_tags, **spec.tags}
        fs = make_format_spec(fmt, cols, tags, spec.system, spec.labels, spec.instruction)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    if columns.get("kto_tag"):  # kept so callers can tell a KTO dataset from an SFT one
        fs = dataclasses.replace(fs, columns={**fs.columns, "kto_tag": columns["kto_tag"]})
    num_samples = entry.get("num_samples")
    if num_samples is not None and not (isinstance(num_samples, int) and num_samples > 0):
        raise DataError(f"{where}: num_samples must be a positive integer, got {num_samples!r}")
    path = info_path.parent / str(entry["file_name"])
    if not path.exists():
        raise DataError(f"{where}: file_name {entry['file_name']!r} not found at {path}")
    return ResolvedDataset(
        name=name,
        files=data_files(path),
        format=fmt,
        format_spec=fs,
        ranking=bool(entry.get("ranking", False)),
        num_samples=num_samples,
        defined_in=str(info_path),
    )


def _listed_only(given: dict[str, Any], defaults: dict[str, str | None]) -> dict[str, str | None]:
    """LLaMA-Factory's rule: once an entry lists columns (tags), the unlisted ones are None, not defaults."""
    return {k: given.get(k) for k in defaults}


__all__ = ["INFO_FILE", "SHIPPED_DIR", "ResolvedDataset", "find_entry", "registries", "resolve"]
