"""Preference and KTO layouts: LLaMA-Factory ranking alpaca/sharegpt, TRL chosen/rejected, kto_tag; bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tuneforge.config import DataConfig, DatasetSpec
from tuneforge.data.build import build_sft
from tuneforge.data.preference import build_preference
from tuneforge.data.schema import DataError


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def data(path: Path | None = None, name: str | None = None, dataset_dir: Path | None = None, **spec: Any) -> DataConfig:
    ds = DatasetSpec(path=str(path) if path else None, name=name, **spec)
    return DataConfig(datasets=[ds], dataset_dir=str(dataset_dir) if dataset_dir else None)


def registered(tmp_path: Path, entry: dict[str, Any], rows: list[dict[str, Any]]) -> DataConfig:
    jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.jsonl", **entry}}))
    return data(name="d", dataset_dir=tmp_path)


def test_shipped_ranking_alpaca_set() -> None:
    out = build_preference(data(name="iso_dates_pref"))
    row = out.train[0]
    assert row["prompt"][-1]["role"] == "user" and "\n" not in row["prompt"][-1]["content"][-1:]
    assert row["chosen"][0]["role"] == "assistant" and row["chosen"][0]["content"][:2] in {"19", "20"}
    assert row["chosen"] != row["rejected"] and out.stats["train"] == 96


def test_ranking_sharegpt_with_system(tmp_path: Path) -> None:
    entry = {
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    }
    rows = [
        {
            "conversations": [
                {"from": "human", "value": "hi"},
                {"from": "gpt", "value": "hello"},
                {"from": "human", "value": "2+2?"},
            ],
            "chosen": {"from": "gpt", "value": "4"},
            "rejected": {"from": "gpt", "value": "5"},
            "system": "Be brief.",
        }
    ]
    row = build_preference(registered(tmp_path, entry, rows)).train[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == ("4", "5")


def test_trl_layout_common_prefix_and_text_prompt(tmp_path: Path) -> None:
    u = {"role": "user", "content": "Capital of France?"}
    rows = [
        {
            "chosen": [u, {"role": "assistant", "content": "Paris"}],
            "rejected": [u, {"role": "assistant", "content": "Rome"}],
        },
        {"prompt": "Capital of Italy?", "chosen": "Rome", "rejected": "Paris"},
    ]
    out = build_preference(data(jsonl(tmp_path / "p.jsonl", rows), format="preference"))
    got = sorted((r["prompt"][0]["content"], r["chosen"][0]["content"]) for r in out.train)
    assert got == [("Capital of France?", "Paris"), ("Capital of Italy?", "Rome")]


def test_shipped_kto_set() -> None:
    out = build_preference(data(name="iso_dates_kto"), "kto")
    labels = out.train["label"]
    assert set(labels) == {True, False} and out.train[0]["completion"][0]["role"] == "assistant"


def test_missing_rejected_names_file_and_row(tmp_path: Path) -> None:
    entry = {"formatting": "alpaca", "ranking": True, "columns": {"prompt": "q", "chosen": "good", "rejected": "bad"}}
    rows = [{"q": "a", "good": "x", "bad": "y"}, {"q": "b", "good": "x"}]
    with pytest.raises(DataError, match=r"d\.jsonl:2: missing column 'bad'"):
        build_preference(registered(tmp_path, entry, rows))


def test_kto_tag_must_be_boolean(tmp_path: Path) -> None:
    entry = {"formatting": "sharegpt", "columns": {"messages": "conversations", "kto_tag": "label"}}
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    rows = [{"conversations": turns, "label": True}, {"conversations": turns, "label": "yes"}]
    with pytest.raises(DataError, match=r"d\.jsonl:2: column 'label' must be true or false, got 'yes'"):
        build_preference(registered(tmp_path, entry, rows), "kto")


def test_preference_answer_must_be_one_assistant_message(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "q",
            "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
            "rejected": "c",
        }
    ]
    with pytest.raises(DataError, match=r"p\.jsonl:1: 'chosen' must add exactly one assistant message"):
        build_preference(data(jsonl(tmp_path / "p.jsonl", rows), format="preference"))


def test_stage_and_dataset_kind_must_match(tmp_path: Path, chatml_tokenizer: Any) -> None:
    with pytest.raises(DataError, match="'iso_dates_pref' is a preference dataset; it needs a preference stage"):
        build_sft(data(name="iso_dates_pref"), chatml_tokenizer)
    with pytest.raises(DataError, match="'iso_dates' is not a preference dataset: set `ranking: true`"):
        build_preference(data(name="iso_dates"))
    with pytest.raises(DataError, match="'iso_dates_pref' has no kto_tag column"):
        build_preference(data(name="iso_dates_pref"), "kto")
