"""data.pool: the few-shot pool is the training split build_sft trains on (num_samples, val_size, cutoff_len
skips), read through the one shared loader, data.build.load_and_split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_data_build import alpaca_rows, answers, cfg, jsonl
from tuneforge.data.build import build_sft, load_and_split
from tuneforge.data.pool import train_conversations
from tuneforge.data.schema import DataError


def data_cfg(tmp_path: Path) -> Any:
    rows = [*alpaca_rows("A", 10), {"instruction": "word " * 200, "input": "", "output": "LONG"}]
    jsonl(tmp_path / "a.jsonl", rows)
    jsonl(tmp_path / "b.jsonl", [*alpaca_rows("B", 3), rows[-1]])
    info = {"a": {"file_name": "a.jsonl", "num_samples": 6}}  # 6 of the 11 rows, resampled
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    datasets = [{"name": "a"}, {"path": str(tmp_path / "b.jsonl")}]
    return cfg(datasets=datasets, dataset_dir=str(tmp_path), val_size=2, cutoff_len=64, seed=5)


def test_the_pool_is_what_training_trains_on(tmp_path: Path, chatml_tokenizer: Any) -> None:
    config = data_cfg(tmp_path)
    trained = answers(build_sft(config, chatml_tokenizer).train, chatml_tokenizer)
    pool = [c.messages[-1].content for c in train_conversations(config, chatml_tokenizer)]
    assert pool == list(dict.fromkeys(trained))  # the same samples, in the mixed order, each once
    assert "LONG" not in pool  # build_sft skips it: no assistant token within cutoff_len


def test_load_and_split_is_the_split_build_sft_renders(tmp_path: Path, chatml_tokenizer: Any) -> None:
    config = data_cfg(tmp_path)
    data = load_and_split(config, "sft")
    built = build_sft(config, chatml_tokenizer)
    assert len(data.datasets[0].rows) == 6 and data.counts == [6, 4]  # num_samples applied
    assert len(set(data.val)) == 2 and not set(data.val) & set(data.train)
    val_answers = [data.sample(k).messages[-1].content for k in data.val]  # type: ignore[union-attr]
    assert sorted(answers(built.val, chatml_tokenizer)) == sorted(a for a in val_answers if a != "LONG")
    skipped = sum(1 for k in data.train if data.sample(k).messages[-1].content == "LONG")  # type: ignore[union-attr]
    assert built.stats["train"] == len(data.train) - skipped


def test_a_pool_of_only_skipped_samples_is_an_error(tmp_path: Path, chatml_tokenizer: Any) -> None:
    jsonl(tmp_path / "long.jsonl", [{"instruction": "word " * 200, "input": "", "output": "x"}] * 2)
    with pytest.raises(DataError, match=r"no training sample is left within data.cutoff_len=64"):
        train_conversations(cfg(datasets=[{"path": str(tmp_path / "long.jsonl")}], cutoff_len=64), chatml_tokenizer)
