"""build_sft / build_text end to end: file types, mixing, splitting, placeholders, skipping, determinism."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.test_data_formats import write
from tuneforge.config import DataConfig
from tuneforge.data.build import build_sft, build_text
from tuneforge.data.mixing import mix_counts, resample, split
from tuneforge.data.render import IGNORE_INDEX
from tuneforge.data.schema import DataError


def alpaca_rows(prefix: str, n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Question {i}?", "input": "", "output": f"{prefix}{i}"} for i in range(n)]


def jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def cfg(**raw: Any) -> DataConfig:
    return DataConfig.model_validate({"cutoff_len": 128, **raw})


def answers(ds: Any, tok: Any) -> list[str]:
    """The labelled text of each row, without the end-of-turn token."""
    return [tok.decode([t for t in row if t != IGNORE_INDEX], skip_special_tokens=True) for row in ds["labels"]]


# ---- formats x file types ------------------------------------------------------------------------------

ROWS = {
    "alpaca": [
        {"instruction": "Hi", "input": "", "output": "Hello"},
        {"instruction": "Q", "input": "x", "output": "Yes"},
    ],
    "sharegpt": [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "Yes"}]},
    ],
    "openai": [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "Yes"}]},
    ],
}
COMBOS = [("alpaca", e) for e in ("json", "jsonl", "csv", "parquet")]
COMBOS += [(f, e) for f in ("sharegpt", "openai") for e in ("json", "jsonl", "parquet")]


@pytest.mark.parametrize("fmt,ext", COMBOS)
def test_build_sft_from_every_format_and_file_type(tmp_path: Path, any_tokenizer: Any, fmt: str, ext: str) -> None:
    path = write(tmp_path / f"d.{ext}", ROWS[fmt])
    data = build_sft(cfg(datasets=[{"path": str(path), "format": fmt}]), any_tokenizer)
    assert sorted(answers(data.train, any_tokenizer)) == ["Hello", "Yes"]
    assert data.val is None
    assert data.train.column_names == ["input_ids", "labels", "attention_mask"]
    assert data.train[0]["attention_mask"] == [1] * len(data.train[0]["input_ids"])


def test_stats(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 4))
    data = build_sft(cfg(datasets=[{"path": path}], val_size=1), chatml_tokenizer)
    labels = sum(t != IGNORE_INDEX for row in data.train["labels"] for t in row)
    tokens = sum(len(row) for row in data.train["input_ids"])
    assert data.stats["train"] == 3 and data.stats["val"] == 1
    assert (data.stats["label_tokens"], data.stats["total_tokens"]) == (labels, tokens)
    ds = data.stats["datasets"][path]
    assert {k: v for k, v in ds.items() if "tokens" not in k} == {
        "format": "alpaca",
        "read": 4,
        "selected": 4,
        "mixed": 4,
        "used": 4,
        "skipped": {},
        "truncated": 0,
        "train": 3,
        "val": 1,
    }
    json.dumps(data.stats)  # written to data_stats.json by the stage


# ---- mixing and splitting ------------------------------------------------------------------------------


def test_mix_counts() -> None:
    assert mix_counts([10, 4], [None, None], None) == [10, 4]
    assert mix_counts([10, 4], [None, None], 7) == [5, 2]
    assert mix_counts([10, 4], [1.0, 3.0], 20) == [5, 15]
    assert mix_counts([10, 4], [1.0, 2.0], None) == [5, 9]  # 14 * 1/3 = 4.67 -> 5, 14 * 2/3 = 9.33 -> 9
    assert mix_counts([3, 3, 3], [1.0, None, 1.0], 10) == [4, 3, 3]  # a missing ratio weighs 1.0


def test_resample_repeats_every_row_before_sampling() -> None:
    rows = resample(4, 10, random.Random(0))
    assert rows[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert len(rows) == 10 and len(set(rows[8:])) == 2 and set(rows[8:]) <= {0, 1, 2, 3}
    subset = resample(10, 3, random.Random(0))
    assert len(set(subset)) == 3 and subset == resample(10, 3, random.Random(0))


def test_mixing_follows_ratios(tmp_path: Path, chatml_tokenizer: Any) -> None:
    a = jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 10))
    b = jsonl(tmp_path / "b.jsonl", alpaca_rows("B", 4))
    config = cfg(datasets=[{"path": a, "ratio": 1.0}, {"path": b, "ratio": 3.0}], mix_size=20)
    data = build_sft(config, chatml_tokenizer)
    got = Counter(answers(data.train, chatml_tokenizer))
    assert sum(v for k, v in got.items() if k.startswith("A")) == 5
    assert sum(v for k, v in got.items() if k.startswith("B")) == 15
    assert sorted(v for k, v in got.items() if k.startswith("B")) == [3, 4, 4, 4]  # all rows, then a sample
    assert len({k for k in got if k.startswith("A")}) == 5  # subsampled without repeats
    assert (data.stats["datasets"][a]["mixed"], data.stats["datasets"][b]["mixed"]) == (5, 15)


def test_split_sizes(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 20))
    data = build_sft(cfg(datasets=[{"path": path}], val_size=0.25), chatml_tokenizer)
    assert data.val is not None and (len(data.train), len(data.val)) == (15, 5)
    data = build_sft(cfg(datasets=[{"path": path}], val_size=3), chatml_tokenizer)
    assert data.val is not None and (len(data.train), len(data.val)) == (17, 3)
    assert not set(answers(data.train, chatml_tokenizer)) & set(answers(data.val, chatml_tokenizer))
    with pytest.raises(DataError, match=r"data.val_size=20.0 asks for 20 validation samples, but there are only 20"):
        build_sft(cfg(datasets=[{"path": path}], val_size=20), chatml_tokenizer)


def test_validation_holds_out_every_copy_of_a_repeated_sample(tmp_path: Path, chatml_tokenizer: Any) -> None:
    small = jsonl(tmp_path / "small.jsonl", alpaca_rows("S", 3))
    data = build_sft(cfg(datasets=[{"path": small}], mix_size=12, val_size=1), chatml_tokenizer)
    assert data.val is not None and len(data.val) == 1
    (held,) = answers(data.val, chatml_tokenizer)
    assert held not in answers(data.train, chatml_tokenizer) and len(data.train) == 8


def test_split_function() -> None:
    pool = [(0, 0), (0, 1), (0, 0), (0, 2)]
    assert split(pool, 0) == (pool, [])
    assert split(pool, 0.25) == ([(0, 1), (0, 2)], [(0, 0)])


def test_same_config_same_data_and_the_seed_matters(tmp_path: Path, chatml_tokenizer: Any) -> None:
    a = jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 30))
    b = jsonl(tmp_path / "b.jsonl", alpaca_rows("B", 7))
    raw = {"datasets": [{"path": a, "ratio": 1.0}, {"path": b, "ratio": 1.0}], "mix_size": 40, "val_size": 0.1}
    one, two = build_sft(cfg(**raw), chatml_tokenizer), build_sft(cfg(**raw), chatml_tokenizer)
    assert one.train.to_dict() == two.train.to_dict()
    assert one.val is not None and two.val is not None and one.val.to_dict() == two.val.to_dict()
    other = build_sft(cfg(**raw, seed=7), chatml_tokenizer)
    assert other.train["input_ids"] != one.train["input_ids"]


def test_max_samples_takes_the_first_rows(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 10))
    data = build_sft(cfg(datasets=[{"path": path, "max_samples": 3}]), chatml_tokenizer)
    assert sorted(answers(data.train, chatml_tokenizer)) == ["A0", "A1", "A2"]
    assert data.stats["datasets"][path]["read"] == 3  # the rest of the file is not even read


def test_registry_num_samples_resamples(tmp_path: Path, chatml_tokenizer: Any) -> None:
    jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 2))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"a": {"file_name": "a.jsonl", "num_samples": 5}}))
    data = build_sft(cfg(datasets=[{"name": "a"}], dataset_dir=str(tmp_path)), chatml_tokenizer)
    assert sorted(Counter(answers(data.train, chatml_tokenizer)).values()) == [2, 3]
    assert data.stats["datasets"]["a"]["read"] == 2 and data.stats["datasets"]["a"]["selected"] == 5


# ---- placeholders and system prompts -------------------------------------------------------------------

IDENTITY = [{"instruction": "Who are you?", "input": "", "output": "I am {{name}}, made by {{author}}."}]


def test_placeholders_are_filled_from_variables(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "id.jsonl", IDENTITY)
    data = build_sft(cfg(datasets=[{"path": path}], variables={"name": "Forge", "author": "us"}), chatml_tokenizer)
    assert answers(data.train, chatml_tokenizer) == ["I am Forge, made by us."]


def test_unresolved_placeholder_names_it_the_source_and_data_variables(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "id.jsonl", IDENTITY)
    with pytest.raises(DataError) as e:
        build_sft(cfg(datasets=[{"path": path}], variables={"author": "us"}), chatml_tokenizer)
    assert str(e.value) == (
        f"{path}:1: placeholder {{{{name}}}} has no value; define it in data.variables "
        "(e.g. data.variables.name=...); defined: author"
    )


def test_spaced_braces_are_data_not_placeholders(tmp_path: Path, chatml_tokenizer: Any) -> None:
    rows = [{"instruction": "Jinja?", "input": "", "output": "Write {{ user }}."}]
    data = build_sft(cfg(datasets=[{"path": jsonl(tmp_path / "j.jsonl", rows)}]), chatml_tokenizer)
    assert answers(data.train, chatml_tokenizer) == ["Write {{ user }}."]


def test_dataset_system_prompt_with_a_placeholder(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 1))
    config = cfg(datasets=[{"path": path, "system": "You are {{name}}."}], variables={"name": "Forge"})
    text = chatml_tokenizer.decode(build_sft(config, chatml_tokenizer).train[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are Forge.<|im_end|>\n<|im_start|>user\nQuestion 0?")


# ---- skipping ------------------------------------------------------------------------------------------


def test_sample_cut_before_its_answer_is_skipped_and_counted(
    tmp_path: Path, chatml_tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [*alpaca_rows("A", 3), {"instruction": "word " * 200, "input": "", "output": "LONG"}]
    path = jsonl(tmp_path / "a.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="tuneforge.data"):
        data = build_sft(cfg(datasets=[{"path": path}], cutoff_len=64), chatml_tokenizer)
    assert sorted(answers(data.train, chatml_tokenizer)) == ["A0", "A1", "A2"]
    ds = data.stats["datasets"][path]
    assert ds["skipped"] == {"no_assistant_tokens_after_truncation": 1} and ds["used"] == 3
    assert data.stats["train"] == 3
    assert "skipped 1 of 4 samples" in caplog.text and f"(e.g. {path}:4)" in caplog.text


def test_dataset_with_nothing_left_after_skipping(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "long.jsonl", [{"instruction": "word " * 200, "input": "", "output": "x"}])
    with pytest.raises(DataError, match=r"dataset '.*long.jsonl': every sample lost .* data.cutoff_len=64"):
        build_sft(cfg(datasets=[{"path": path}], cutoff_len=64), chatml_tokenizer)


# ---- bad inputs ----------------------------------------------------------------------------------------


def test_empty_dataset(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset '.*empty.jsonl' has no records"):
        build_sft(cfg(datasets=[{"path": str(path)}]), chatml_tokenizer)
    with pytest.raises(DataError, match=r"data\.datasets is empty"):
        build_sft(cfg(), chatml_tokenizer)


def test_malformed_line_and_missing_column_surface_from_build(tmp_path: Path, chatml_tokenizer: Any) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{oops}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        build_sft(cfg(datasets=[{"path": str(bad)}]), chatml_tokenizer)
    path = jsonl(tmp_path / "q.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"q\.jsonl:1: missing column 'instruction' .* columns: 'question', 'answer'"):
        build_sft(cfg(datasets=[{"path": path}]), chatml_tokenizer)


def test_unknown_format_dataset_name_and_hub_entry(tmp_path: Path, chatml_tokenizer: Any) -> None:
    path = jsonl(tmp_path / "a.jsonl", alpaca_rows("A", 1))
    with pytest.raises(DataError, match="unknown format 'chatml'; known formats: alpaca, sharegpt, openai, text"):
        build_sft(cfg(datasets=[{"path": path, "format": "chatml"}]), chatml_tokenizer)
    info = {"mine": {"file_name": "a.jsonl"}, "big": {"hf_hub_url": "org/big"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"dataset 'mien' is not registered .*\(did you mean 'mine'\?\)"):
        build_sft(cfg(datasets=[{"name": "mien"}], dataset_dir=str(tmp_path)), chatml_tokenizer)
    with pytest.raises(DataError, match=r"dataset 'big' .* hf_hub_url='org/big', which needs network access"):
        build_sft(cfg(datasets=[{"name": "big"}], dataset_dir=str(tmp_path)), chatml_tokenizer)


def test_sft_refuses_text_and_preference_datasets(tmp_path: Path, chatml_tokenizer: Any) -> None:
    jsonl(tmp_path / "c4.jsonl", [{"text": "doc"}])
    info = {
        "c4": {"file_name": "c4.jsonl", "columns": {"prompt": "text"}},
        "dpo": {"file_name": "c4.jsonl", "ranking": True},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="dataset 'c4' has no response column: it is pre-training text"):
        build_sft(cfg(datasets=[{"name": "c4"}], dataset_dir=str(tmp_path)), chatml_tokenizer)
    with pytest.raises(DataError, match="dataset 'dpo' is a preference dataset"):
        build_sft(cfg(datasets=[{"name": "dpo"}], dataset_dir=str(tmp_path)), chatml_tokenizer)
    with pytest.raises(DataError, match=r"is plain text \(format text\)"):
        build_sft(cfg(datasets=[{"path": str(tmp_path / "c4.jsonl"), "format": "text"}]), chatml_tokenizer)


# ---- build_text ----------------------------------------------------------------------------------------


def test_build_text_from_txt_and_a_llama_factory_pretraining_entry(tmp_path: Path, any_tokenizer: Any) -> None:
    txt = tmp_path / "wiki.txt"
    txt.write_text("The quick brown fox.\n\nA lazy dog.\n", encoding="utf-8")
    jsonl(tmp_path / "c4.jsonl", [{"text": "Paris is in France."}])
    (tmp_path / "dataset_info.json").write_text(
        json.dumps({"c4": {"file_name": "c4.jsonl", "columns": {"prompt": "text"}}})
    )
    config = cfg(datasets=[{"path": str(txt), "format": "text"}, {"name": "c4"}], dataset_dir=str(tmp_path))
    data = build_text(config, any_tokenizer)
    eos = any_tokenizer.eos_token_id
    assert data.train["labels"] == data.train["input_ids"]
    assert all(row[-1] == eos for row in data.train["input_ids"])
    texts = sorted(any_tokenizer.decode(row, skip_special_tokens=True) for row in data.train["input_ids"])
    assert texts == ["A lazy dog.", "Paris is in France.", "The quick brown fox."]
    with pytest.raises(DataError, match="is sharegpt chat data; pre-training needs format text"):
        path = write(tmp_path / "s.json", ROWS["sharegpt"])
        build_text(cfg(datasets=[{"path": str(path), "format": "sharegpt"}]), any_tokenizer)
