"""DataConfig -> tokenized train/validation sets: resolve, read, format, fill placeholders, mix, split, render.

Every step is seeded from `data.seed`, so the same config gives identical datasets. Mixing works on sample
keys (dataset, row) rather than copies (data/mixing.py), which lets the validation split hold out every copy of
a sample that a small, repeated dataset contributes: no validation sample is ever trained on. The steps resolve
→ read → mix → split are `load_and_split`, the one place that decides which samples a run trains on (few-shot
pools read it too: data/pool.py); `read_samples` is shared with preference.py, which builds rm/dpo/kto data.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from datasets import Dataset

from tuneforge.config import DataConfig, DatasetSpec
from tuneforge.data.canaries import insert_canaries
from tuneforge.data.formats import FormatSpec, format_record
from tuneforge.data.mixing import Key, mix, resample, split
from tuneforge.data.registry import ResolvedDataset, resolve
from tuneforge.data.render import Rendered, render_conversation, render_text, resolved_tool_format
from tuneforge.data.schema import Conversation, DataError, Message, Preference, Sample, Text
from tuneforge.data.scrub import Scrubber, scrubber_for
from tuneforge.data.sources import Record, read_records
from tuneforge.utils.progress import progress_bar

log = logging.getLogger("tuneforge.data")

# `{{name}}` exactly, no inner spaces: LLaMA-Factory's identity convention, and unlike Jinja/Handlebars code
# (`{{ x }}`) that chat data about programming often contains.
PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
TRUNCATED_AWAY = "no_assistant_tokens_after_truncation"

S = TypeVar("S")
UNIT_COLUMN = "unit"  # the privacy unit of each training row (build_sft / build_text with `units`)
Units = Literal["sample", "user"]


@dataclass(frozen=True)
class SFTData:
    train: Dataset
    val: Dataset | None
    stats: dict[str, Any] = field(default_factory=dict)
    canaries: dict[str, Any] | None = None  # data.canaries: what went into `train`, for the run's canaries.json


@dataclass(frozen=True)
class TextData(SFTData):
    """Pre-training data: the same columns, every token labelled."""


@dataclass
class LoadedDataset:
    name: str
    spec: DatasetSpec
    resolved: ResolvedDataset
    samples: list[Sample]  # as read, one per record
    rows: list[int]  # the rows selected by num_samples / max_samples, repeats allowed
    scrubbed: dict[str, int] = field(default_factory=dict)  # data.scrub: values replaced, per PII type
    users: list[str] | None = None  # each record's user (the `user_column` of build_sft / build_text)


def build_sft(cfg: DataConfig, tokenizer: Any, units: Units | None = None, user_column: str | None = None) -> SFTData:
    """Chat datasets rendered through the tokenizer's chat template, loss on assistant turns.

    `units` adds a `unit` column to the training set naming each row's privacy unit (DP-SGD): `sample`, the record
    (the copies mixing makes of one record share it), or `user`, the record's value in `user_column`."""

    def render(sample: Sample) -> Rendered | None:
        assert isinstance(sample, Conversation)  # _load made every sample of an "sft" build a Conversation
        return render_conversation(
            tokenizer, sample, cfg.cutoff_len, cfg.train_on_prompt, cfg.tool_format, cfg.max_tools
        )

    train, val, stats, canaries = _build(cfg, "sft", render, units, user_column)
    stats["tool_format"] = resolved_tool_format(tokenizer, cfg.tool_format)  # what serve/chat/eval render with
    return SFTData(train, val, stats, canaries)


def build_text(cfg: DataConfig, tokenizer: Any, units: Units | None = None, user_column: str | None = None) -> TextData:
    """Plain-text datasets for pre-training: each text + EOS, truncated to cutoff_len, all tokens labelled
    (`units`, `user_column`: as build_sft)."""

    def render(sample: Sample) -> Rendered | None:
        assert isinstance(sample, Text)
        return render_text(tokenizer, sample, cfg.cutoff_len)

    train, val, stats, canaries = _build(cfg, "text", render, units, user_column)
    return TextData(train, val, stats, canaries)


def _build(
    cfg: DataConfig,
    kind: str,
    render: Callable[[Sample], Rendered | None],
    units: Units | None = None,
    user_column: str | None = None,
) -> tuple[Dataset, Dataset | None, dict[str, Any], dict[str, Any] | None]:
    if units == "user" and not user_column:
        raise ValueError("units='user' needs the user_column")
    scrubber = scrubber_for(cfg)
    data = load_and_split(cfg, kind, scrubber, user_column if units == "user" else None)
    loaded, counts, train_keys, val_keys = data.datasets, data.counts, data.train, data.val
    cache: dict[Key, Rendered | None] = {}
    stats: dict[str, Any] = {"datasets": {}}
    for i, d in enumerate(loaded):
        stats["datasets"][d.name] = {
            "format": d.resolved.format,
            "read": len(d.samples),
            "selected": len(d.rows),
            "mixed": counts[i],
            "used": 0,
            "skipped": {},
            "truncated": 0,
            "train": 0,
            "val": 0,
            "total_tokens": 0,
            "label_tokens": 0,
        }
        if scrubber is not None:
            stats["datasets"][d.name]["scrubbed"] = d.scrubbed
    if scrubber is not None:
        stats["scrub"] = scrubber.summary()
    kept: list[Key] = []
    train = _render_split(train_keys, "train", loaded, render, cache, stats, kept)
    val = _render_split(val_keys, "val", loaded, render, cache, stats) if val_keys else None
    _report_skips(loaded, cache, stats, cfg.cutoff_len)
    if not train:
        raise DataError("no training samples are left after the validation split and skipping")
    real_rows = train
    train, canaries = insert_canaries(train, cfg, "text" if kind == "text" else "chat", render)
    record = canaries.to_json() if canaries is not None else None
    if record is not None:  # the summary; the secrets themselves go to the run's canaries.json
        stats["canaries"] = {k: v for k, v in record.items() if k != "canaries"}
    stats.update(
        train=len(train),
        val=len(val) if val is not None else 0,
        total_tokens=sum(len(r.input_ids) for r in train),
        label_tokens=sum(r.label_tokens for r in train),
    )
    train_set = _to_dataset(train)
    if units is not None:
        real = iter(_unit_of(key, loaded) for key in kept)
        # a canary copy (data.canaries) is a unit of its own: k copies of a secret are k samples, as in an audit
        # of sample-level DP; the real rows keep their order among them
        ids = {id(r) for r in real_rows}
        unit_column = [next(real) if id(r) in ids else f"canary:{i}" for i, r in enumerate(train)]
        train_set = train_set.add_column(UNIT_COLUMN, unit_column)
        stats["privacy_units"] = len(set(unit_column))
    return train_set, (_to_dataset(val) if val else None), stats, record


@dataclass(frozen=True)
class LoadedSplit:
    """The datasets as read, and the sample keys of the training and validation splits as training sees them
    (train in the mixed order, copies repeated; before rendering, so before data.cutoff_len skips any)."""

    datasets: list[LoadedDataset]
    counts: list[int]  # each dataset's share of the mix (mix_counts)
    train: list[Key]
    val: list[Key]

    def sample(self, key: Key) -> Sample:
        return self.datasets[key[0]].samples[key[1]]


def load_and_split(
    cfg: DataConfig, kind: str, scrubber: Scrubber | None = None, user_column: str | None = None
) -> LoadedSplit:
    """resolve → read → format → fill placeholders → mix → split: `kind` "sft" (Conversations) or "text"."""
    loaded = [_load(spec, cfg, kind, i, scrubber, user_column) for i, spec in enumerate(require_datasets(cfg))]
    counts, pool = mix([d.rows for d in loaded], [d.spec.ratio for d in loaded], cfg)
    train_keys, val_keys = split(pool, cfg.val_size)
    return LoadedSplit(loaded, counts, train_keys, val_keys)


def _unit_of(key: Key, loaded: list[LoadedDataset]) -> str:
    users = loaded[key[0]].users
    return f"user:{users[key[1]]}" if users is not None else f"sample:{key[0]}:{key[1]}"


def _user_of(record: Record, column: str, source: str) -> str:
    """The record's user (unit user of DP-SGD): a string or an integer in `column`, never missing."""
    if column not in record or record[column] is None or record[column] == "":
        have = ", ".join(map(str, record)) or "none"
        raise DataError(f"{source}: no value in the user column {column!r} (privacy.user_column); columns: {have}")
    value = record[column]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{source}: user column {column!r} holds {value!r}; a user is named by a string or an integer")
    return str(value)


def _load(
    spec: DatasetSpec,
    cfg: DataConfig,
    kind: str,
    index: int,
    scrubber: Scrubber | None = None,
    user_column: str | None = None,
) -> LoadedDataset:
    resolved = resolve(spec, cfg.dataset_dir)
    fmt, fspec = format_for(resolved, kind)
    # max_samples keeps the first rows, so no more are read; num_samples resamples them all first
    limit = spec.max_samples if resolved.num_samples is None else None
    before = dict(scrubber.counts) if scrubber is not None else {}

    def to_sample(src: str, rec: Record) -> tuple[Sample, str | None]:
        user = _user_of(rec, user_column, src) if user_column else None
        return substitute(format_record(fmt, rec, fspec, src), cfg.variables), user

    pairs = read_samples(resolved, to_sample, limit, scrubber)
    samples = [sample for sample, _ in pairs]
    users = [str(user) for _, user in pairs] if user_column else None
    rows = list(range(len(samples)))
    if resolved.num_samples is not None:  # LLaMA-Factory's num_samples: resampled before max_samples
        rows = resample(len(samples), resolved.num_samples, random.Random(f"{cfg.seed}/num_samples/{index}"))
    if spec.max_samples is not None:
        rows = rows[: spec.max_samples]
    earlier = [s.name or s.path for s in cfg.datasets[:index]]
    name = f"{resolved.name}#{index}" if resolved.name in earlier else resolved.name  # stats keys stay distinct
    scrubbed = {t: n - before.get(t, 0) for t, n in scrubber.counts.items() if n > before.get(t, 0)} if scrubber else {}
    return LoadedDataset(name, spec, resolved, samples, rows, scrubbed, users)


def require_datasets(cfg: DataConfig) -> list[DatasetSpec]:
    if not cfg.datasets:
        raise DataError("data.datasets is empty: list at least one dataset (a `name` or a `path`)")
    return list(cfg.datasets)


def read_samples(
    resolved: ResolvedDataset,
    to_sample: Callable[[str, Record], S],
    limit: int | None,
    scrubber: Scrubber | None = None,
) -> list[S]:
    """The records of `resolved`'s files (the first `limit` of them, if given), each made a sample by
    `to_sample(source, record)`, after `scrubber` (data.scrub) replaced its PII; a dataset without records is an
    error."""
    records: Iterable[tuple[str, Record]] = (pair for file in resolved.files for pair in read_records(file))
    if limit is not None:
        records = itertools.islice(records, limit)
    if scrubber is not None:
        records = ((src, scrubber.record(rec)[0]) for src, rec in records)
        before = (scrubber.records, scrubber.changed, sum(scrubber.counts.values()))
    samples = [to_sample(src, rec) for src, rec in records]
    if not samples:
        raise DataError(f"dataset {resolved.name!r} has no records (files: {', '.join(map(str, resolved.files))})")
    if scrubber is not None:
        log.info(
            "data.scrub: dataset %r: %d values replaced in %d of %d records",
            resolved.name,
            sum(scrubber.counts.values()) - before[2],
            scrubber.changed - before[1],
            scrubber.records - before[0],
        )
    return samples


def format_for(d: ResolvedDataset, kind: str) -> tuple[str, FormatSpec]:
    """The format to read `d` with for this kind of build, or a DataError saying where it belongs."""
    what = f"dataset {d.name!r}"
    if d.ranking or d.kto or d.format == "preference":
        raise DataError(f"{what} is a {'KTO' if d.kto else 'preference'} dataset; it needs a preference stage")
    if kind == "text":
        if d.format == "text":
            return "text", d.format_spec
        if d.format == "alpaca" and d.format_spec.columns.get("prompt"):
            # LLaMA-Factory keeps pre-training text in the alpaca prompt column: {"columns": {"prompt": "text"}}
            return "text", FormatSpec({"text": d.format_spec.columns["prompt"]})
        raise DataError(f"{what} is {d.format} chat data; pre-training needs format text")
    if d.format == "text":
        raise DataError(f"{what} is plain text (format text); it is pre-training data, not chat data")
    if d.format == "alpaca" and not d.format_spec.columns.get("response"):
        raise DataError(f"{what} has no response column: it is pre-training text, not chat data")
    return d.format, d.format_spec


def substitute(sample: Sample, variables: dict[str, str]) -> Sample:
    """Fill `{{name}}` placeholders from data.variables; one without a value is an error, never left in."""

    def fill(text: str) -> str:
        for m in PLACEHOLDER.finditer(text):
            if m.group(1) not in variables:
                raise DataError(
                    f"{sample.source}: placeholder {m.group(0)} has no value; define it in data.variables "
                    f"(e.g. data.variables.{m.group(1)}=...); defined: {', '.join(variables) or 'none'}"
                )
        return PLACEHOLDER.sub(lambda m: variables[m.group(1)], text)

    if isinstance(sample, Text):
        return replace(sample, text=fill(sample.text))
    if isinstance(sample, Preference):
        prompt = tuple(Message(m.role, fill(m.content)) for m in sample.prompt)
        return replace(sample, prompt=prompt, chosen=fill(sample.chosen), rejected=fill(sample.rejected))
    return replace(sample, messages=tuple(replace(m, content=fill(m.content)) for m in sample.messages))


def _render_split(
    keys: list[Key],
    split_name: str,
    loaded: list[LoadedDataset],
    render: Callable[[Sample], Rendered | None],
    cache: dict[Key, Rendered | None],
    stats: dict[str, Any],
    kept: list[Key] | None = None,
) -> list[Rendered]:
    """The rendered samples of `keys` (skipped ones left out); `kept` receives the keys of those rendered."""
    out = []
    bar = progress_bar(len(keys), f"rendering {split_name} samples", unit="sample", enabled=len(keys) >= 2000)
    for key in keys:
        bar.update()
        if key not in cache:
            cache[key] = render(loaded[key[0]].samples[key[1]])
        rendered = cache[key]
        ds = stats["datasets"][loaded[key[0]].name]
        if rendered is None:
            ds["skipped"][TRUNCATED_AWAY] = ds["skipped"].get(TRUNCATED_AWAY, 0) + 1
            continue
        out.append(rendered)
        if kept is not None:
            kept.append(key)
        ds["used"] += 1
        ds[split_name] += 1
        ds["truncated"] += rendered.truncated
        ds["total_tokens"] += len(rendered.input_ids)
        ds["label_tokens"] += rendered.label_tokens
    bar.close()
    return out


def _report_skips(
    loaded: list[LoadedDataset], cache: dict[Key, Rendered | None], stats: dict[str, Any], cutoff: int
) -> None:
    for i, d in enumerate(loaded):
        ds = stats["datasets"][d.name]
        skipped = ds["skipped"].get(TRUNCATED_AWAY, 0)
        if not skipped:
            continue
        example = next(d.samples[k[1]].source for k, r in cache.items() if k[0] == i and r is None)
        if ds["used"] == 0:
            raise DataError(
                f"dataset {d.name!r}: every sample lost all its assistant tokens to data.cutoff_len={cutoff} "
                f"(e.g. {example}); raise data.cutoff_len"
            )
        log.warning(
            "dataset %r: skipped %d of %d samples: their assistant turns lie beyond data.cutoff_len=%d (e.g. %s)",
            d.name,
            skipped,
            skipped + ds["used"],
            cutoff,
            example,
        )


def _to_dataset(rows: list[Rendered]) -> Dataset:
    return Dataset.from_dict(
        {
            "input_ids": [r.input_ids for r in rows],
            "labels": [r.labels for r in rows],
            "attention_mask": [r.attention_mask for r in rows],
        }
    )


__all__ = [
    "UNIT_COLUMN",
    "LoadedDataset",
    "LoadedSplit",
    "SFTData",
    "TextData",
    "Units",
    "build_sft",
    "build_text",
    "format_for",
    "load_and_split",
    "read_samples",
    "require_datasets",
    "substitute",
]
