"""dataset_info.json read as LLaMA-Factory writes it: lookup order, column/tag semantics, and errors.

Fixture files mimic the layout of LLaMA-Factory's data/ folder; one optional test reads the real sdist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tuneforge.data
from tuneforge.config import DatasetSpec
from tuneforge.data import registry
from tuneforge.data.formats import format_record
from tuneforge.data.registry import resolve
from tuneforge.data.render import render_conversation
from tuneforge.data.schema import Conversation, DataError, Message
from tuneforge.data.sources import read_records

INFO: dict[str, Any] = {
    "alpaca_demo": {"file_name": "alpaca_demo.json"},
    "glaive_demo": {
        "file_name": "glaive_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "tools": "tools"},
    },
    "role_content": {
        "file_name": "role_content.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    },
    "qa_csv": {"file_name": "qa.csv", "columns": {"prompt": "question", "response": "answer", "system": "sys"}},
    "parts": {"file_name": "parts"},
    "c4_like": {"file_name": "c4_like.jsonl", "columns": {"prompt": "text"}},
    "dpo_like": {"file_name": "alpaca_demo.json", "ranking": True},
    "mllm_like": {"file_name": "alpaca_demo.json", "columns": {"messages": "messages", "images": "images"}},
    "sampled": {"file_name": "alpaca_demo.json", "num_samples": 5},
    "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en"},
    "odd_format": {"file_name": "alpaca_demo.json", "formatting": "chatml"},
    "missing_file": {"file_name": "nowhere.json"},
}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "dataset_info.json").write_text(json.dumps({"identity": {"file_name": "identity.json"}}))
    (shipped / "identity.json").write_text(json.dumps([{"instruction": "Who?", "input": "", "output": "Me."}]))
    monkeypatch.setattr(registry, "SHIPPED_DIR", shipped)
    d = tmp_path / "data"
    d.mkdir()
    (d / "dataset_info.json").write_text(json.dumps(INFO, indent=2))
    rows = [
        {"instruction": "Say hi", "input": "", "output": "Hi"},
        {"instruction": "Add", "input": "1 2", "output": "3"},
    ]
    (d / "alpaca_demo.json").write_text(json.dumps(rows))
    glaive = {
        "conversations": [
            {"from": "human", "value": "Weather in Oslo?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
            {"from": "observation", "value": '{"sky": "rain"}'},
            {"from": "gpt", "value": "It rains."},
        ],
        "tools": '[{"name": "weather", "description": "sky", "parameters": {}}]',
        "system": "ignored: the entry does not list a system column",
    }
    (d / "glaive_demo.json").write_text(json.dumps([glaive]))
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    (d / "role_content.jsonl").write_text(json.dumps(chat) + "\n")
    (d / "qa.csv").write_text("question,answer,sys,input\nWhy?,Because.,Be short.,ignored\n")
    (d / "parts").mkdir()
    (d / "parts" / "b.jsonl").write_text(json.dumps(rows[1]) + "\n")
    (d / "parts" / "a.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (d / "c4_like.jsonl").write_text(json.dumps({"text": "a document"}) + "\n")
    return d


def samples(spec: DatasetSpec, data_dir: Path | None) -> list[Any]:
    r = resolve(spec, str(data_dir) if data_dir else None)
    return [format_record(r.format, rec, r.format_spec, src) for f in r.files for src, rec in read_records(f)]


def msgs(*pairs: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(r, c) for r, c in pairs)  # type: ignore[arg-type]


def test_alpaca_entry_defaults(data_dir: Path) -> None:
    r = resolve(DatasetSpec(name="alpaca_demo"), str(data_dir))
    assert (r.name, r.files, r.format, r.ranking) == ("alpaca_demo", [data_dir / "alpaca_demo.json"], "alpaca", False)
    assert dict(r.format_spec.columns) == {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "history": None,
        "system": None,
        "tools": None,
        "chosen": None,
        "rejected": None,
    }
    assert [s.messages for s in samples(DatasetSpec(name="alpaca_demo"), data_dir)][1] == msgs(
        ("user", "Add\n1 2"), ("assistant", "3")
    )


def test_sharegpt_entry_with_tools_column(data_dir: Path) -> None:
    (conv,) = samples(DatasetSpec(name="glaive_demo"), data_dir)
    assert conv == Conversation(
        msgs(
            ("user", "Weather in Oslo?"),
            ("assistant", '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>'),
            ("tool", '{"sky": "rain"}'),
            ("assistant", "It rains."),
        ),
        tools='[{"name": "weather", "description": "sky", "parameters": {}}]',
        source=f"{data_dir / 'glaive_demo.json'}:row 1",
    )


def test_listed_columns_switch_off_the_unlisted_ones_as_in_llama_factory(data_dir: Path) -> None:
    # qa_csv lists prompt/response/system but not query, so the file's `input` column is not read
    (conv,) = samples(DatasetSpec(name="qa_csv"), data_dir)
    assert conv.messages == msgs(("system", "Be short."), ("user", "Why?"), ("assistant", "Because."))


def test_listed_tags_switch_off_the_unlisted_ones(data_dir: Path) -> None:
    r = resolve(DatasetSpec(name="role_content"), str(data_dir))
    assert r.format_spec.tags["role_tag"] == "role" and r.format_spec.tags["observation_tag"] is None
    assert samples(DatasetSpec(name="role_content"), data_dir)[0].messages == msgs(("user", "Hi"), ("assistant", "Yo"))


def test_spec_format_columns_and_system_override_the_entry(data_dir: Path) -> None:
    spec = DatasetSpec(name="role_content", format="openai", system="Be kind.")
    assert samples(spec, data_dir)[0].messages == msgs(("system", "Be kind."), ("user", "Hi"), ("assistant", "Yo"))
    spec = DatasetSpec(name="qa_csv", columns={"query": "input"})
    assert samples(spec, data_dir)[0].messages[1] == Message("user", "Why?\nignored")


def test_file_name_may_be_a_folder(data_dir: Path) -> None:
    r = resolve(DatasetSpec(name="parts"), str(data_dir))
    assert r.files == [data_dir / "parts" / "a.jsonl", data_dir / "parts" / "b.jsonl"]


def test_entry_flags(data_dir: Path) -> None:
    assert resolve(DatasetSpec(name="dpo_like"), str(data_dir)).ranking is True
    assert resolve(DatasetSpec(name="sampled"), str(data_dir)).num_samples == 5
    assert resolve(DatasetSpec(name="c4_like"), str(data_dir)).format_spec.columns["response"] is None


def test_user_registry_comes_before_the_shipped_one(data_dir: Path) -> None:
    assert samples(DatasetSpec(name="identity"), None)[0].messages[1] == Message("assistant", "Me.")
    info = {**INFO, "identity": {"file_name": "alpaca_demo.json"}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    assert resolve(DatasetSpec(name="identity"), str(data_dir)).files == [data_dir / "alpaca_demo.json"]


def test_missing_shipped_registry_is_skipped(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "SHIPPED_DIR", data_dir / "absent")
    assert resolve(DatasetSpec(name="alpaca_demo"), str(data_dir)).format == "alpaca"
    with pytest.raises(DataError, match="'identity' is not registered"):
        resolve(DatasetSpec(name="identity"), str(data_dir))


def test_shipped_registry_location() -> None:
    assert Path(tuneforge.data.__file__).parent / "synthetic" == registry.SHIPPED_DIR


def test_hub_only_entry_needs_network(data_dir: Path) -> None:
    with pytest.raises(DataError) as e:
        resolve(DatasetSpec(name="alpaca_en"), str(data_dir))
    assert str(e.value) == (
        f"dataset 'alpaca_en' in {data_dir / 'dataset_info.json'} loads from hf_hub_url='llamafactory/alpaca_en', "
        "ms_hub_url='llamafactory/alpaca_en', which needs network access (or a loading script); tuneforge "
        "reads local files only: download it and set file_name in the entry"
    )


def test_unknown_name_suggests_the_closest(data_dir: Path) -> None:
    with pytest.raises(DataError) as e:
        resolve(DatasetSpec(name="glaive_dmeo"), str(data_dir))
    msg = str(e.value)
    assert msg.startswith("dataset 'glaive_dmeo' is not registered in ")
    assert "known: alpaca_demo, glaive_demo, role_content," in msg and ", identity" in msg
    assert msg.endswith("(did you mean 'glaive_demo'?)")


def test_unknown_name_mentions_a_dataset_dir_without_registry(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(DataError, match=r"\(data.dataset_dir .* has no dataset_info.json\); known: identity"):
        resolve(DatasetSpec(name="mine"), str(tmp_path))


def test_unknown_format_lists_formats(data_dir: Path) -> None:
    known = "alpaca, sharegpt, openai, text, preference, glaive, xlam, toolbench, lf_v1, tallrec, classification"
    with pytest.raises(DataError, match=rf"unknown format 'chatml'; known formats: {known}$"):
        resolve(DatasetSpec(name="odd_format"), str(data_dir))


def test_media_columns_and_missing_files_are_errors(data_dir: Path) -> None:
    with pytest.raises(DataError, match=r"'mllm_like' .* has images columns; tuneforge trains on text only"):
        resolve(DatasetSpec(name="mllm_like"), str(data_dir))
    with pytest.raises(DataError, match=r"file_name 'nowhere.json' not found at .*nowhere.json"):
        resolve(DatasetSpec(name="missing_file"), str(data_dir))


def test_bad_column_override_names_the_dataset(data_dir: Path) -> None:
    with pytest.raises(DataError, match=r"dataset 'alpaca_demo' in .*: columns 'mesages' not used by format"):
        resolve(DatasetSpec(name="alpaca_demo", columns={"mesages": "x"}), str(data_dir))


def test_invalid_registry_json_names_file_and_line(data_dir: Path) -> None:
    (data_dir / "dataset_info.json").write_text('{\n "a": {"file_name": "x.json",}\n}')
    with pytest.raises(DataError, match=r"dataset_info.json:2: not valid JSON"):
        resolve(DatasetSpec(name="a"), str(data_dir))


def test_path_spec_reads_with_its_format(tmp_path: Path) -> None:
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}))
    r = resolve(DatasetSpec(path=str(p), format="openai"), None)
    assert (r.name, r.files, r.format, r.defined_in) == (str(p), [p], "openai", "path")
    assert resolve(DatasetSpec(path=str(p)), None).format == "alpaca"  # LLaMA-Factory's default
    txt = tmp_path / "wiki.txt"
    txt.write_text("a document\n", encoding="utf-8")
    assert resolve(DatasetSpec(path=str(txt)), None).format == "text"


# ---- the real LLaMA-Factory data folder, when its sdist has been unpacked locally -----------------------

LF_DATA = sorted(Path("/tmp/lf").glob("llamafactory-*/data/dataset_info.json"))


@pytest.mark.skipif(not LF_DATA, reason="LLaMA-Factory sdist not unpacked under /tmp/lf")
def test_real_llama_factory_demo_datasets(chatml_tokenizer: Any) -> None:
    data_dir = str(LF_DATA[-1].parent)
    counts = {}
    for name in ("identity", "alpaca_en_demo", "glaive_toolcall_en_demo"):
        convs = samples(DatasetSpec(name=name), Path(data_dir))
        counts[name] = len(convs)
        for conv in convs[:20]:
            rendered = render_conversation(chatml_tokenizer, conv, 100_000)
            assert rendered is not None and rendered.label_tokens > 0
    assert counts == {"identity": 91, "alpaca_en_demo": 999, "glaive_toolcall_en_demo": 300}
    assert any(c.tools for c in samples(DatasetSpec(name="glaive_toolcall_en_demo"), Path(data_dir)))
    with pytest.raises(DataError, match="needs network access"):
        resolve(DatasetSpec(name="alpaca_en"), data_dir)
