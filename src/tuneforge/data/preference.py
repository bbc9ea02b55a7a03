"""Preference and KTO data: ranked pairs and tagged single answers, as TRL's conversational columns.

Layouts read (LLaMA-Factory's dataset_info.json conventions, so its datasets work unchanged):
- `ranking: true` alpaca: instruction/input + `chosen`/`rejected` text columns;
- `ranking: true` sharegpt: a conversation ending with a user turn + `chosen`/`rejected` turn objects;
- format `preference` (TRL's layout): `chosen`/`rejected` as text or message lists, with an optional
  `prompt` (text or messages); without one, the prompt is the two conversations' common prefix;
- `kto_tag` (alpaca, sharegpt or openai): the last assistant turn is the answer, the tag says if it is good.

The rows handed to TRL are conversational ({"prompt": [...], "chosen": [...], ...}): TRL applies the
tokenizer's chat template itself, the same template the SFT renderer uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from datasets import Dataset

from tuneforge.config import DataConfig, DatasetSpec
from tuneforge.data.build import read_samples, require_datasets, substitute
from tuneforge.data.canaries import refuse_canaries
from tuneforge.data.formats import FormatSpec, format_record
from tuneforge.data.mixing import mix, split
from tuneforge.data.registry import ResolvedDataset, resolve
from tuneforge.data.schema import Conversation, DataError, KTOSample, Message, Preference
from tuneforge.data.scrub import scrubber_for

Kind = Literal["pairs", "kto"]


@dataclass(frozen=True)
class PreferenceData:
    train: Dataset
    val: Dataset | None
    stats: dict[str, Any] = field(default_factory=dict)


def build_preference(cfg: DataConfig, kind: Kind = "pairs") -> PreferenceData:
    """Preference pairs (kind "pairs", for rm/dpo) or KTO examples (kind "kto"), mixed and split like SFT data."""
    refuse_canaries(cfg, "preference data (stages rm, dpo, kto)")
    specs = require_datasets(cfg)
    loaded: list[list[Preference | KTOSample]] = []
    stats: dict[str, Any] = {"datasets": {}}
    for i, spec in enumerate(specs):
        resolved, samples = _read_dataset(spec, cfg, kind)
        loaded.append(samples)
        stats["datasets"][f"{resolved.name}#{i}"] = {"format": resolved.format, "read": len(samples)}
    _, pool = mix([range(len(s)) for s in loaded], [d.ratio for d in specs], cfg)
    train_keys, val_keys = split(pool, cfg.val_size)
    train = _to_dataset([loaded[i][j] for i, j in train_keys])
    val = _to_dataset([loaded[i][j] for i, j in val_keys]) if val_keys else None
    stats.update(train=len(train), val=len(val) if val is not None else 0)
    return PreferenceData(train, val, stats)


def build_test_pairs(cfg: DataConfig) -> Dataset | None:
    """`data.test_datasets` as one dataset of held-out pairs (every row, in file order), or None if unset."""
    samples: list[Preference | KTOSample] = []
    for spec in cfg.test_datasets:
        samples += _read_dataset(spec, cfg, "pairs")[1]
    return _to_dataset(samples) if samples else None


def _read_dataset(
    spec: DatasetSpec, cfg: DataConfig, kind: Kind
) -> tuple[ResolvedDataset, list[Preference | KTOSample]]:
    resolved = resolve(spec, cfg.dataset_dir)
    # max_samples keeps the first rows (LLaMA-Factory's num_samples resampling: SFT and text builds only)
    samples = read_samples(
        resolved, lambda src, rec: read_sample(resolved, kind, rec, src), spec.max_samples, scrubber_for(cfg)
    )
    return resolved, [_fill(s, cfg.variables) for s in samples]


def read_sample(d: ResolvedDataset, kind: Kind, record: dict[str, Any], source: str) -> Preference | KTOSample:
    """One record of `d` as a Preference or KTOSample; errors name the source (file and row)."""
    if kind == "kto":
        if not d.kto:
            raise DataError(f"dataset {d.name!r} has no kto_tag column; stage kto needs columns.kto_tag")
        return _kto(d, record, source)
    if not (d.ranking or d.format == "preference"):
        raise DataError(
            f"dataset {d.name!r} is not a preference dataset: set `ranking: true` in dataset_info.json "
            "(alpaca/sharegpt with chosen/rejected columns) or use format `preference`"
        )
    if d.format == "preference":
        sample = format_record("preference", record, d.format_spec, source)
        assert isinstance(sample, Preference)  # the preference format only makes these
        return sample
    c = d.format_spec.columns
    chosen_col, rejected_col = c.get("chosen") or "chosen", c.get("rejected") or "rejected"
    chosen = _ranked(d, record, chosen_col, source)
    rejected = _ranked(d, record, rejected_col, source)
    return Preference(chosen.messages[:-1], chosen.messages[-1].content, rejected.messages[-1].content, source)


def _ranked(d: ResolvedDataset, record: dict[str, Any], column: str, source: str) -> Conversation:
    """The conversation ending with the answer in `column`, read by the dataset's own chat format."""
    if column not in record:
        raise DataError(f"{source}: missing column {column!r}; this record has columns: {', '.join(record)}")
    answer = record[column]
    spec: FormatSpec
    if d.format == "alpaca":
        spec = dataclasses.replace(d.format_spec, columns={**d.format_spec.columns, "response": column})
        rec = record
    elif d.format == "sharegpt":
        spec = d.format_spec
        msgs = str(spec.columns["messages"])
        if isinstance(answer, str):  # some files store the answers as bare text
            answer = {str(spec.tags["role_tag"]): spec.tags["assistant_tag"], str(spec.tags["content_tag"]): answer}
        turns = record.get(msgs)
        rec = {**record, msgs: [*turns, answer]} if isinstance(turns, list) else record
    else:
        raise DataError(f"dataset {d.name!r}: ranking needs format alpaca or sharegpt, not {d.format!r}")
    sample = format_record(d.format, rec, spec, source)
    assert isinstance(sample, Conversation)
    return sample


def _kto(d: ResolvedDataset, record: dict[str, Any], source: str) -> KTOSample:
    tag = str(d.format_spec.columns["kto_tag"])
    if tag not in record:
        raise DataError(f"{source}: missing column {tag!r} (the kto_tag); this record has: {', '.join(record)}")
    label = record[tag]
    if not isinstance(label, bool):
        raise DataError(f"{source}: column {tag!r} must be true or false, got {label!r:.40}")
    cols = {k: v for k, v in d.format_spec.columns.items() if k != "kto_tag"}
    sample = format_record(d.format, record, dataclasses.replace(d.format_spec, columns=cols), source)
    assert isinstance(sample, Conversation)
    if sample.messages[-1].role != "assistant":
        raise DataError(f"{source}: a KTO example must end with an assistant answer")
    return KTOSample(sample.messages[:-1], sample.messages[-1].content, label, source)


def _fill(sample: Preference | KTOSample, variables: dict[str, str]) -> Preference | KTOSample:
    """Fill {{placeholders}} through the SFT rule (one without a value is an error)."""
    answers = [sample.chosen, sample.rejected] if isinstance(sample, Preference) else [sample.completion]
    conv = Conversation((*sample.prompt, *(Message("assistant", a) for a in answers)), source=sample.source)
    filled = substitute(conv, variables)
    assert isinstance(filled, Conversation)
    n = len(sample.prompt)
    texts = [m.content for m in filled.messages[n:]]
    if isinstance(sample, Preference):
        return dataclasses.replace(sample, prompt=filled.messages[:n], chosen=texts[0], rejected=texts[1])
    return dataclasses.replace(sample, prompt=filled.messages[:n], completion=texts[0])


def _chat(messages: Iterable[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _to_dataset(samples: list[Preference | KTOSample]) -> Dataset:
    rows: list[dict[str, Any]] = []
    for s in samples:
        if isinstance(s, Preference):
            rows.append(
                {
                    "prompt": _chat(s.prompt),
                    "chosen": [{"role": "assistant", "content": s.chosen}],
                    "rejected": [{"role": "assistant", "content": s.rejected}],
                }
            )
        else:
            completion = [{"role": "assistant", "content": s.completion}]
            rows.append({"prompt": _chat(s.prompt), "completion": completion, "label": s.desirable})
    return Dataset.from_list(rows)


__all__ = ["PreferenceData", "build_preference", "build_test_pairs", "read_sample"]
