"""Readers: every supported file type, folders, and the errors bad files raise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneforge.data.schema import DataError
from tuneforge.data.sources import data_files, read_records

ROWS = [{"instruction": "a", "output": "1"}, {"instruction": "b", "output": "2"}]


def test_json_list(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text(json.dumps(ROWS, indent=1), encoding="utf-8")
    assert list(read_records(p)) == [(f"{p}:row 1", ROWS[0]), (f"{p}:row 2", ROWS[1])]


def test_json_object_holding_one_list(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"version": "1", "data": ROWS}), encoding="utf-8")
    assert [r for _, r in read_records(p)] == ROWS


def test_json_object_with_nested_objects_is_one_record(tmp_path: Path) -> None:
    # ToolBench writes one answer object per file: its nested objects say it is a record, not a wrapper.
    answer = {"win": True, "answer_generation": {"train_messages": []}, "compare_candidates": [[1], [2]]}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(answer), encoding="utf-8")
    assert list(read_records(p)) == [(f"{p}:row 1", answer)]


def test_json_object_with_two_lists_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": ROWS, "test": ROWS}), encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.json: a JSON object must hold exactly one list.*found 2"):
        list(read_records(p))


def test_json_lines_saved_as_json(tmp_path: Path) -> None:
    p = tmp_path / "d.json"
    p.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
    assert list(read_records(p)) == [(f"{p}:1", ROWS[0]), (f"{p}:2", ROWS[1])]


def test_jsonl_skips_blank_lines_and_counts_lines(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    assert list(read_records(p)) == [(f"{p}:1", ROWS[0]), (f"{p}:3", ROWS[1])]


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + '{"instruction": "b", "output": }\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        list(read_records(p))
    assert str(e.value).startswith(f"{p}:2: not valid JSON (Expecting value at column 32)")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('[\n {"a": 1},\n {"a": 2,}\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(p))}:3: not valid JSON"):
        list(read_records(p))


def test_csv_rows_report_their_starting_line(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text('instruction,output\n"multi\nline",1\nb,2\n', encoding="utf-8")
    assert list(read_records(p)) == [
        (f"{p}:2", {"instruction": "multi\nline", "output": "1"}),
        (f"{p}:4", {"instruction": "b", "output": "2"}),
    ]


def test_parquet_keeps_nested_values(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
    pq.write_table(pa.Table.from_pylist(rows), p)
    assert list(read_records(p)) == [(f"{p}:row 1", rows[0])]


def test_txt_non_empty_lines_are_text_records(tmp_path: Path) -> None:
    p = tmp_path / "d.txt"
    p.write_text("first line\n\n   \n  second line  \n", encoding="utf-8")
    assert list(read_records(p)) == [(f"{p}:1", {"text": "first line"}), (f"{p}:4", {"text": "  second line  "})]


def test_folder_reads_supported_files_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text(json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    (tmp_path / "a.json").write_text(json.dumps([ROWS[0]]), encoding="utf-8")
    (tmp_path / "README.md").write_text("not data", encoding="utf-8")
    assert data_files(tmp_path) == [tmp_path / "a.json", tmp_path / "b.jsonl"]
    assert [r for _, r in read_records(tmp_path)] == ROWS


def test_unknown_extension_lists_supported_ones(tmp_path: Path) -> None:
    p = tmp_path / "d.xlsx"
    p.write_text("x", encoding="utf-8")
    with pytest.raises(DataError) as e:
        list(read_records(p))
    assert str(e.value) == f"{p}: unsupported file type '.xlsx'; supported: .json, .jsonl, .csv, .tsv, .parquet, .txt"


def test_folder_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"holds no data files; supported: \.json, \.jsonl"):
        list(read_records(tmp_path))


def test_a_record_that_is_not_an_object(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n["a", 1]\n', encoding="utf-8")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(p))}:2: expected an object with named fields, got \['a', 1\]"
    ):
        list(read_records(p))
