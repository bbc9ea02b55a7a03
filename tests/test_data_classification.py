"""The `classification` training format (SST-2 / AG News TSV, any labelled text): the .tsv reader, label
resolution, the dataset settings `labels` / `instruction` and where they are refused, the prompt shared with
eval's `classification` task, mixing, preview, and a 2-step SFT run on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SHARED_DATA
from tuneforge.cli import load_config, main
from tuneforge.config import DataConfig, DatasetSpec, TaskSpec
from tuneforge.data.build import load_and_split
from tuneforge.data.formats import format_record, make_format_spec
from tuneforge.data.registry import resolve
from tuneforge.data.schema import Conversation, DataError, Message
from tuneforge.data.sources import read_records
from tuneforge.eval import read_split
from tuneforge.eval.prompts import Item, chat
from tuneforge.eval.tasks import build_task
from tuneforge.stages import run_stage

SST2 = SHARED_DATA / "sst2_agnews" / "SST-2" / "train.tsv"
LABELS = ["negative", "positive"]
INSTRUCTION = "What is the sentiment of this movie review? Answer with one of: negative / positive."
AG_LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def sst2_file(path: Path, n: int = 12) -> Path:
    """SST-2's layout: a `sentence<TAB>label` header, 0/1 labels, trailing spaces and a stray quote."""
    rows = [f'{"a charming" if i % 2 else "a dull"} " film number {i} . \t{i % 2}' for i in range(n)]
    return write(path, "sentence\tlabel\n" + "\n".join(rows) + "\n")


def agnews_file(path: Path) -> Path:
    """AG News' layout: no header, text<TAB>label with the label words themselves."""
    return write(path, "Stocks rose on Monday.\tBusiness\nThe team won the cup.\tSports\nA new chip ships.\tSci/Tech\n")


def convert(record: dict[str, Any], source: str = "f.tsv:2", **settings: Any) -> Conversation:
    sample = format_record("classification", record, make_format_spec("classification", **settings), source)
    assert isinstance(sample, Conversation)
    return sample


# ---- the .tsv reader -----------------------------------------------------------------------------------


def test_tsv_with_a_header_is_read_by_the_header_with_quotes_as_they_are(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nit 's \"good . \t1\n\n\t\nbad\t0\n")
    assert list(read_records(path)) == [
        (f"{path}:2", {"sentence": "it 's \"good . ", "label": "1"}),  # blank lines skipped, lines still counted
        (f"{path}:5", {"sentence": "bad", "label": "0"}),
    ]


def test_tsv_without_a_header_names_its_columns_text_and_label(tmp_path: Path) -> None:
    path = agnews_file(tmp_path / "dev.tsv")
    got = list(read_records(path))
    assert got[0] == (f"{path}:1", {"text": "Stocks rose on Monday.", "label": "Business"})
    assert [src for src, _ in got] == [f"{path}:{n}" for n in (1, 2, 3)]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("sentence\tlabel\ngood\t1\ngood\tmore\t1\n", 3, "3 tab-separated fields where the header has 2"),
        ("one\tWorld\nonly one field\n", 2, "1 tab-separated fields where a file without header"),
    ],
)
def test_a_row_with_the_wrong_number_of_fields_names_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(DataError, match=f"{path}:{line}: {message}"):
        list(read_records(path))


# ---- labels ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "labels", "word"),
    [
        ("0", LABELS, "negative"),  # SST-2: digits index `labels`
        (1, LABELS, "positive"),  # JSON integers too
        (" Positive. ", LABELS, "positive"),  # text: case and punctuation aside, written as `labels` spells it
        ("sci/tech", AG_LABELS, "Sci/Tech"),
        ("1", ["1", "2", "3", "4"], "1"),  # digit labels are matched as text, not as an index
        (3, ["1", "2", "3", "4"], "3"),  # a JSON integer the same way: eval reads the label as its digits
        ("Sports", [], "Sports"),  # without `labels`, text labels are used as they are
    ],
)
def test_label_resolution(label: Any, labels: list[str], word: str) -> None:
    conv = convert({"text": "some text", "label": label}, labels=labels, instruction=None if labels else "Topic?")
    assert conv.messages[-1] == Message("assistant", word)


@pytest.mark.parametrize(
    ("label", "labels", "message"),
    [
        ("neutral", LABELS, "column 'label': label 'neutral' is not one of labels \\['negative', 'positive'\\]"),
        ("2", LABELS, "column 'label': label '2' is not one of labels"),
        (True, LABELS, "column 'label': a label is text or an integer, got bool"),
        ("1", [], "column 'label': label '1' is a number; name the labels in order with `labels`"),
        (3, [], "column 'label': label 3 is a number; name the labels in order with `labels`"),
        ("  ", [], "column 'label' is empty"),
    ],
)
def test_bad_labels_name_file_line_column_and_value(label: Any, labels: list[str], message: str) -> None:
    with pytest.raises(DataError, match=f"^train.tsv:7: {message}"):
        convert({"sentence": "x", "label": label}, "train.tsv:7", labels=labels, instruction="Which?")


def test_an_unknown_label_in_a_file_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\nmeh\tneutral\n")
    cfg = DataConfig(datasets=[DatasetSpec(path=str(path), format="classification", labels=LABELS)])
    with pytest.raises(DataError, match=f"{path}:3: column 'label': label 'neutral' is not one of labels"):
        load_and_split(cfg, "sft")


def test_missing_text_and_switched_off_columns_are_errors() -> None:
    with pytest.raises(DataError, match=r"f\.tsv:2: missing column 'text'.*has columns: 'review', 'label'"):
        convert({"review": "x", "label": "0"}, labels=LABELS)
    with pytest.raises(DataError, match="column 'review' is empty"):
        convert({"review": " ", "label": "0"}, labels=LABELS, columns={"text": "review"})
    conv = convert({"review": "fine", "stars": "1"}, labels=LABELS, columns={"text": "review", "label": "stars"})
    assert conv.messages[-1].content == "positive"


# ---- settings ---------------------------------------------------------------------------------------------


def test_the_user_turn_is_the_instruction_a_blank_line_and_the_text() -> None:
    record = {"sentence": "  a fine film . ", "label": "1"}
    default = convert(record, labels=LABELS)
    assert default.messages == (
        Message("user", "Answer with one of: negative / positive.\n\na fine film ."),
        Message("assistant", "positive"),
    )
    given = convert(record, labels=LABELS, instruction=INSTRUCTION, system="Be brief.")
    assert [m.content for m in given.messages] == ["Be brief.", f"{INSTRUCTION}\n\na fine film .", "positive"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "format classification needs `labels`.*or an `instruction`"),
        ({"labels": ["Yes", "No", "yes."]}, "labels\\[0\\] and labels\\[2\\] \\('Yes', 'yes.'\\) name one label twice"),
        ({"labels": ["ok", " "]}, "labels\\[1\\] is empty"),
    ],
)
def test_bad_settings_are_refused_before_any_record(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    path = sst2_file(tmp_path / "train.tsv")
    with pytest.raises(DataError, match=f"dataset '{path}': {message}"):
        resolve(DatasetSpec(path=str(path), format="classification", **settings), None)


@pytest.mark.parametrize(
    ("fmt", "key"), [("alpaca", "labels"), ("alpaca", "instruction"), ("tallrec", "instruction"), (None, "labels")]
)
def test_labels_and_instruction_are_refused_on_formats_that_do_not_read_them(
    tmp_path: Path, fmt: str | None, key: str
) -> None:
    path = write(tmp_path / "a.json", json.dumps([{"instruction": "q", "input": "", "output": "Yes."}]))
    value: Any = LABELS if key == "labels" else "Say it."
    shown = fmt or "alpaca"  # a path without a format is alpaca
    message = f"dataset '{path}': `{key}` is read only by format classification; format '{shown}' does not read it"
    with pytest.raises(DataError, match=message):
        resolve(DatasetSpec(path=str(path), format=fmt, **{key: value}), None)


def test_registered_datasets_are_refused_the_settings_too_and_name_the_dataset(tmp_path: Path) -> None:
    write(tmp_path / "a.json", json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    write(tmp_path / "dataset_info.json", json.dumps({"mine": {"file_name": "a.json"}}))
    with pytest.raises(DataError, match=r"dataset 'mine' in .*dataset_info\.json: `labels` is read only by format"):
        resolve(DatasetSpec(name="mine", labels=LABELS), str(tmp_path))


def test_a_folder_holding_dev_or_test_is_refused(tmp_path: Path) -> None:
    for split in ("train", "dev", "test"):
        sst2_file(tmp_path / "SST-2" / f"{split}.tsv")
    with pytest.raises(DataError, match=r"among them dev\.tsv, test\.tsv; format classification would train on"):
        resolve(DatasetSpec(path=str(tmp_path / "SST-2"), format="classification", labels=LABELS), None)


# ---- one prompt for training and eval -----------------------------------------------------------------------


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
@pytest.mark.parametrize("layout", ["sst2", "agnews"])
def test_training_samples_are_the_eval_prompts_and_answers(
    tmp_path: Path, instruction: str | None, layout: str
) -> None:
    path = sst2_file(tmp_path / "test.tsv") if layout == "sst2" else agnews_file(tmp_path / "test.tsv")
    labels = LABELS if layout == "sst2" else AG_LABELS
    extra = {"instruction": instruction} if instruction else {}
    resolved = resolve(DatasetSpec(path=str(path), format="classification", labels=labels, system="S.", **extra), None)
    samples = [format_record("classification", r, resolved.format_spec, s) for s, r in read_records(path)]
    examples = read_split("tsv", path, "test")
    spec = TaskSpec(type="classification", format="tsv", path=str(path), labels=labels, system="S.", **extra)
    task = build_task(spec, examples, "eval.tasks[0]")
    assert len(samples) == len(examples) > 2
    for sample, ex in zip(samples, examples, strict=True):
        assert isinstance(sample, Conversation)
        prompt = chat(spec, Item(ex), task._question, lambda e: "")  # what eval renders: system, then the user turn
        answer = task.labels[task.gold[ex.id]]  # type: ignore[attr-defined]
        assert list(sample.messages) == [*prompt, Message("assistant", answer)]
        assert sample.messages[1].content.startswith(instruction or "Answer with one of: ")


# ---- mixing, preview, training ----------------------------------------------------------------------------


def _mixed(path: Path, seed: int = 42) -> list[Conversation]:
    spec = DatasetSpec(path=str(path), format="classification", labels=LABELS, instruction=INSTRUCTION, ratio=1.0)
    data = load_and_split(DataConfig(datasets=[spec], mix_size=160, seed=seed), "sft")
    samples = [data.sample(k) for k in data.train]
    assert all(isinstance(s, Conversation) for s in samples)
    return samples  # type: ignore[return-value]


def test_mixing_gives_mix_size_seeded_samples(tmp_path: Path) -> None:
    path = sst2_file(tmp_path / "train.tsv", n=50)
    first, again, other = _mixed(path), _mixed(path), _mixed(path, seed=7)
    assert len(first) == 160 and [s.source for s in first] == [s.source for s in again]
    assert [s.source for s in first] != [s.source for s in other]
    assert len({s.source for s in first}) == 50  # 160 of 50 rows: every row thrice, 10 of them a fourth time
    assert {s.messages[-1].content for s in first} == set(LABELS)


@pytest.mark.skipif(not SST2.is_file(), reason="../shared/data/sst2_agnews is absent")
def test_mixing_the_shared_sst2_train_split() -> None:
    samples = _mixed(SST2)
    assert len(samples) == 160 and all(s.messages[0].content.startswith(f"{INSTRUCTION}\n\n") for s in samples)
    assert {s.messages[-1].content for s in samples} == set(LABELS)
    assert all(s.source and s.source.startswith(f"{SST2}:") for s in samples)


def _config(tmp_path: Path, model_dir: Path, data_path: Path) -> Path:
    raw = {
        "name": "cls",
        "stage": "sft",
        "model": {"path": str(model_dir)},
        "data": {"datasets": [{"path": str(data_path), "format": "classification", "labels": LABELS,
                               "instruction": INSTRUCTION, "ratio": 1.0}], "mix_size": 8, "cutoff_len": 128},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "logging_steps": 1, "threads": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }  # fmt: skip
    path = tmp_path / "cls.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_preview_renders_the_samples(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_path = sst2_file(tmp_path / "train.tsv")
    assert main(["data", "preview", str(_config(tmp_path, tiny_model_dir, data_path)), "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "(format classification)" in out and out.count(f"--- {data_path}:") == 3
    assert out.count(INSTRUCTION) == 3 and "«negative" in out and "«positive" in out


@pytest.mark.usefixtures("one_thread")
def test_two_step_sft_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    data_path = sst2_file(tmp_path / "train.tsv")
    result = run_stage(load_config(_config(tmp_path, tiny_model_dir, data_path), []))
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    stats = json.loads((result.run_dir / "data_stats.json").read_text())
    entry = stats["datasets"][str(data_path)]
    assert stats["train"] == 8 and entry["format"] == "classification" and entry["read"] == 12
