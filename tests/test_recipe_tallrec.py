"""TALLRec recommendation (issue 17): the `tallrec` data format and eval reader, the seeded 16/64/256 draws from
the valid split, AUC and its intervals on hand-computed values, the scoring of known responses, bad input, and
the recipe. The tiny-model runs are in test_recipe_tallrec_eval.py."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tuneforge.config import DataConfig, TaskSpec
from tuneforge.data.build import build_sft, mix
from tuneforge.data.formats import format_record, make_format_spec
from tuneforge.data.schema import Conversation, DataError, Message
from tuneforge.eval import EvalError, read_split
from tuneforge.eval import metrics as m
from tuneforge.eval.lm import Scored
from tuneforge.eval.prompts import Item
from tuneforge.eval.stats import bootstrap, paired_bootstrap, resample_indices
from tuneforge.eval.tallrec_task import label_metrics, p_yes
from tuneforge.eval.tasks import Response, build_task

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "src" / "tuneforge" / "examples" / "recipes" / "tallrec.yaml"
INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the target book by "
    'answering "Yes." or "No.".'
)


def record(split: str, i: int, label: str) -> dict[str, str]:
    return {
        "instruction": INSTRUCTION,
        "input": f'User Preference: "Book {split}-{i}a", "Book {split}-{i}b"\nUser Unpreference: "Book {i}c"\n'
        f'Whether the user will like the target book "{split}-item-{i}"?',
        "output": label,
    }


def write_tallrec(folder: Path, n_valid: int = 300, n_test: int = 40, seed: int = 0) -> Path:
    """valid.json and test.json in TALLRec's layout (JSON lists), labels "Yes." / "No." at random."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("valid", n_valid), ("test", n_test)):
        rows = [record(split, i, "Yes." if i % 2 == 0 or rng.random() < 0.3 else "No.") for i in range(n)]
        (folder / f"{split}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return folder


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


# ---- the data format (training) ------------------------------------------------------------------------


def test_format_is_the_user_turn_and_the_canonical_answer() -> None:
    spec = make_format_spec("tallrec")
    got = format_record("tallrec", record("valid", 3, "Yes."), spec, "f.json:row 1")
    assert got == Conversation(
        (Message("user", INSTRUCTION + "\n" + record("valid", 3, "")["input"]), Message("assistant", "Yes.")),
        source="f.json:row 1",
    )
    for label, canonical in (("yes", "Yes."), (" No. ", "No."), ("YES!", "Yes."), ("No", "No.")):
        conv = format_record("tallrec", {"input": "x", "output": label}, spec, "f:1")
        assert isinstance(conv, Conversation)
        assert conv.messages == (Message("user", "x"), Message("assistant", canonical))  # no instruction: input only


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "i", "input": "x"}, r"f\.json:row 2: missing column 'output' \(the 'response' field\)"),
        ({"instruction": "i", "input": "x", "output": "Maybe."}, r"f\.json:row 2: column 'output': label 'Maybe\.'"),
        ({"instruction": "i", "input": "x", "output": True}, r"f\.json:row 2: column 'output': label True is not Yes"),
        ({"instruction": "i", "output": "Yes."}, r"f\.json:row 2: missing column 'input'"),
        ({"instruction": "i", "input": "  ", "output": "No."}, r"f\.json:row 2: column 'input' is empty"),
        ({"instruction": 3, "input": "x", "output": "No."}, r"f\.json:row 2: column 'instruction' must be text"),
    ],
)
def test_format_errors_name_file_row_and_key(row: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        format_record("tallrec", row, make_format_spec("tallrec"), "f.json:row 2")


def test_columns_can_be_renamed() -> None:
    spec = make_format_spec("tallrec", {"query": "history", "response": "label"})
    conv = format_record("tallrec", {"history": "h", "label": "No."}, spec, "f:1")
    assert isinstance(conv, Conversation) and conv.messages[-1].content == "No."


def _data(path: Path, **kw: Any) -> DataConfig:
    return DataConfig(datasets=[{"path": str(path), "format": "tallrec"}], cutoff_len=256, **kw)


def test_a_bad_row_in_training_data_names_the_file_and_row(tmp_path: Path, chatml_tokenizer: Any) -> None:
    rows = [record("valid", 0, "Yes."), record("valid", 1, "Perhaps")]
    path = write_rows(tmp_path / "valid.json", rows)
    with pytest.raises(DataError, match=rf"{path}:row 2: column 'output': label 'Perhaps' is not Yes or No"):
        build_sft(_data(path), chatml_tokenizer)


def test_a_folder_is_refused_for_training_it_would_train_on_test(tmp_path: Path, chatml_tokenizer: Any) -> None:
    folder = write_tallrec(tmp_path / "book")
    with pytest.raises(DataError, match=r"2 files \(test\.json, valid\.json\); format tallrec trains on one split"):
        build_sft(_data(folder), chatml_tokenizer)


def _draw(n: int, seed: int, rows: int = 300) -> list[int]:
    """The rows of one dataset of `rows` rows that data.mix_size=n, data.seed=seed draws (data.build.mix), in
    training order."""
    counts, pool = mix([list(range(rows))], [None], DataConfig(mix_size=n, seed=seed))
    assert counts == [n] and {i for i, _ in pool} == {0}
    return [j for _, j in pool]


def test_sample_counts_are_seeded_draws() -> None:
    d16 = _draw(16, 42)
    assert len(d16) == 16 == len(set(d16))  # 16 distinct samples, no copies
    assert d16 == _draw(16, 42)  # same seed, same draw, same order
    assert set(d16) != set(_draw(16, 7))  # another seed, another draw
    d256 = _draw(256, 42)
    assert len(set(d256)) == 256 and all(0 <= j < 300 for j in d256)


def test_the_arms_are_nested_on_a_split_the_size_of_tallrecs() -> None:
    # Not a promise of data.mix_size in general: random.sample draws a small sample from a large population
    # (k <= 256 of n = 2,427, TALLRec's book valid split) so that a larger k extends a smaller one's draw.
    d16, d64, d256 = (set(_draw(n, 42, 2427)) for n in (16, 64, 256))
    assert d16 < d64 < d256


def test_training_rows_are_the_draw_from_valid_only(tmp_path: Path, chatml_tokenizer: Any) -> None:
    folder = write_tallrec(tmp_path / "book")
    data = build_sft(_data(folder / "valid.json", mix_size=16, seed=42), chatml_tokenizer)
    texts = [chatml_tokenizer.decode(ids) for ids in data.train["input_ids"]]
    items = [t.split('target book "')[1].split('"')[0] for t in texts]
    assert items == [f"valid-item-{j}" for j in _draw(16, 42)]  # mix's draw, the valid file's rows, in order
    ds = data.stats["datasets"][str(folder / "valid.json")]
    assert (data.stats["train"], ds["read"], ds["mixed"], ds["train"]) == (16, 300, 16, 16)


# ---- the eval reader --------------------------------------------------------------------------------------


def test_reader_reads_the_split_of_a_folder(tmp_path: Path) -> None:
    folder = write_tallrec(tmp_path / "book", n_valid=5, n_test=4)
    test = read_split("tallrec", folder, "test")
    assert [e.id for e in test] == ["0", "1", "2", "3"]
    first = test[0]
    conv = format_record("tallrec", record("test", 0, "Yes."), make_format_spec("tallrec"), "x")
    assert isinstance(conv, Conversation)
    assert first.question == conv.messages[0].content  # the eval prompt is the training prompt
    assert (first.target, first.gold, first.choices, first.reference) == ("Yes", 1, ("No", "Yes"), "Yes.")
    assert len(read_split("tallrec", folder, "valid")) == 5
    assert len(read_split("tallrec", folder / "test.json", "ignored")) == 4  # a file is read as is


def test_reader_errors_name_file_row_and_key(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "test.json", [record("test", 0, "Yes."), {"instruction": "i", "input": "x"}])
    with pytest.raises(EvalError, match=rf"{path}:row 2: missing column 'output'"):
        read_split("tallrec", path, "test")
    write_rows(path, [record("test", 0, "Yes."), record("test", 1, "Nope.")])
    with pytest.raises(EvalError, match=rf"{path}:row 2: column 'output': label 'Nope\.' is not Yes or No"):
        read_split("tallrec", path, "test")
    folder = tmp_path / "movie"
    folder.mkdir()
    write_rows(folder / "valid.json", [record("valid", 0, "No.")])
    with pytest.raises(EvalError, match=r"holds no file for split 'test' \(files: valid\.json\)"):
        read_split("tallrec", folder, "test")


# ---- AUC, its intervals, and the task's scoring -----------------------------------------------------------


def test_auc_by_hand_with_a_tie() -> None:
    # positives 0.9, 0.6; negatives 0.4, 0.2, 0.6: of the 6 pairs 5 ranked right, 1 tied (half) -> 5.5 / 6
    assert m.roc_auc([0.9, 0.4, 0.6, 0.2, 0.6], [1, 0, 1, 0, 0]) == pytest.approx(5.5 / 6)
    assert m.roc_auc([0.1, 0.2, 0.3], [1, 1, 0]) == pytest.approx(0.0)
    assert m.roc_auc([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == pytest.approx(0.5)


def pairwise_auc(scores: list[float], labels: list[int]) -> float:
    """The definition, O(n²): over every (positive, negative) pair, 1 if the positive scores higher, ½ if tied."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_agrees_with_the_pairwise_definition_on_tied_data(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(50, 300)
    scores = [rng.randint(0, 9) / 10 for _ in range(n)]  # 10 distinct values: many ties within and across classes
    labels = [int(rng.random() < 0.4) for _ in range(n)]
    want = pairwise_auc(scores, labels)
    assert m.roc_auc(scores, labels) == pytest.approx(want, abs=1e-12)
    assert m.auc_rows(scores, labels).value() == pytest.approx(want, abs=1e-12)
    assert label_metrics(scores, labels)["auc"].value() == pytest.approx(want, abs=1e-12)


def test_p_yes_is_the_two_label_softmax_and_never_overflows() -> None:
    for lp_no, lp_yes in ((-2.0, -0.5), (-0.1, -3.0), (-1.0, -1.0)):
        softmax = math.exp(lp_yes) / (math.exp(lp_yes) + math.exp(lp_no))
        assert p_yes(lp_no, lp_yes) == pytest.approx(softmax, rel=1e-12)
    assert p_yes(-800.0, -0.0) == 1.0 and p_yes(-0.0, -800.0) == 0.0  # exp(800) overflows a float
    assert p_yes(-1e4, -5e3) == 1.0 and p_yes(-5e3, -1e4) == 0.0
    assert p_yes(-760.0, -50.0) == pytest.approx(1.0) and 0.0 <= p_yes(-50.0, -760.0) < 1e-300


def test_scores_of_a_model_certain_of_its_label(tmp_path: Path) -> None:
    task, items = _task(tmp_path, ["Yes.", "No."])
    lps = [(-900.0, -0.0), (-0.0, -720.0)]  # log P(Yes) - log P(No) beyond ±709: math.exp overflowed here
    scored = task.score(items, [Response((Scored(no, 1), Scored(yes, 1))) for no, yes in lps])
    assert [p["p_yes"] for p in scored.predictions] == pytest.approx([1.0, 0.0], abs=1e-300)
    assert scored.metrics["auc"].value() == 1.0 and scored.metrics["accuracy"].value() == 1.0
    assert [p["correct"] for p in scored.predictions] == [True, True]


def test_accuracy_says_yes_only_above_one_half() -> None:
    got = label_metrics([0.5, 0.5000001, 0.4999999, 0.5], [1, 1, 0, 0])
    assert got["accuracy"].rows[:, 0].tolist() == [0.0, 1.0, 1.0, 1.0]  # exactly 0.5 says No


def test_bootstrap_and_paired_intervals_of_auc() -> None:
    rng = np.random.default_rng(1)
    gold = (rng.random(400) < 0.45).astype(int)
    noise = rng.random(400)
    base = m.auc_rows(list(noise), list(gold))  # chance
    tuned = m.auc_rows(list(0.5 * gold + 0.8 * rng.random(400)), list(gold))  # informative
    idx = resample_indices(400, 300, seed=0)
    b, t = bootstrap(base, idx), bootstrap(tuned, idx)
    assert b.low < 0.5 < b.high and b.low < b.value < b.high
    assert t.value > 0.7 and t.low < t.value < t.high
    diff = paired_bootstrap(base, tuned, idx)
    assert diff.value == pytest.approx(t.value - b.value) and 0 < diff.low < diff.value < diff.high
    same = paired_bootstrap(base, base, idx)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)


def _task(tmp_path: Path, answers: list[str], **spec: Any) -> Any:
    path = write_rows(tmp_path / "test.json", [record("test", i, a) for i, a in enumerate(answers)])
    examples = read_split("tallrec", path, "test")
    task = build_task(TaskSpec(type="tallrec", format="tallrec", path=str(path), **spec), examples, "eval.tasks[0]")
    return task, [Item(e) for e in examples]


def test_scores_of_known_log_probabilities(tmp_path: Path) -> None:
    task, items = _task(tmp_path, ["Yes.", "No.", "Yes.", "No."])
    # (log P(No), log P(Yes)) at the answer position; P(Yes) = softmax over the two
    lps = [(-2.0, -0.5), (-1.0, -1.5), (-1.2, -1.0), (-0.1, -3.0)]
    scored = task.score(items, [Response((Scored(no, 1), Scored(yes, 1))) for no, yes in lps])
    p_yes = [1 / (1 + math.exp(no - yes)) for no, yes in lps]
    assert [p["p_yes"] for p in scored.predictions] == pytest.approx(p_yes)  # 0.818, 0.378, 0.550, 0.052
    # positives 0.818, 0.550 vs negatives 0.378, 0.052: all 4 pairs ranked right
    assert scored.metrics["auc"].value() == pytest.approx(1.0)
    assert scored.metrics["accuracy"].value() == pytest.approx(1.0)  # P(Yes) > 0.5 exactly for the Yes items
    mass = [math.exp(no) + math.exp(yes) for no, yes in lps]
    assert scored.metrics["label_mass"].value() == pytest.approx(sum(mass) / 4)
    assert task.primary == "auc" and scored.predictions[1]["gold"] == "No"
    flipped = task.score(items, [Response((Scored(yes, 1), Scored(no, 1))) for no, yes in lps])
    assert flipped.metrics["auc"].value() == pytest.approx(0.0)
    assert flipped.metrics["accuracy"].value() == pytest.approx(0.0)


def test_task_refuses_one_class_and_settings_of_other_types(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"eval\.tasks\[0\]: .*every item's label is Yes; AUC needs both"):
        _task(tmp_path, ["Yes.", "Yes."])
    with pytest.raises(EvalError, match=r"eval\.tasks\[0\]: labels does not apply to a tallrec task"):
        _task(tmp_path, ["Yes.", "No."], labels=["no", "yes"])
    with pytest.raises(EvalError, match=r"format='alpaca' cannot feed a tallrec task; allowed: tallrec"):
        build_task(TaskSpec(type="tallrec", format="alpaca", path="x.json"), [], "eval.tasks[0]")


# ---- the recipe and the real data (optional) ----------------------------------------------------------


def test_recipe_starts_with_its_command() -> None:
    first = RECIPE.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# tuneforge train ") and "recipes/tallrec.yaml" in first


def test_recipe_validates_where_the_shared_data_is(monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SHARED_DATA / "tallrec" / "book" / "valid.json").is_file():
        pytest.skip("../shared/data/tallrec is not here")
    from tuneforge.cli import load_config

    monkeypatch.chdir(ROOT)  # the recipe's paths are relative to the project root
    cfg = load_config(RECIPE, ["data.mix_size=64"])
    assert cfg.data.mix_size == 64 and cfg.data.datasets[0].format == "tallrec"
    assert str(cfg.data.datasets[0].path).endswith("tallrec/book/valid.json")
    assert [(t.type, t.format, Path(t.path).name) for t in cfg.eval.tasks] == [
        ("tallrec", "tallrec", "book"),
        ("tallrec", "tallrec", "movie"),
    ]
    assert all(t.split == "test" for t in cfg.eval.tasks)


def test_shared_tallrec_data_reads_cleanly() -> None:
    root = SHARED_DATA / "tallrec"
    if not (root / "book" / "test.json").is_file():
        pytest.skip("../shared/data/tallrec is not here")
    for domain, n in (("book", 2427), ("movie", 1000)):
        for split in ("valid", "test"):
            if not (root / domain / f"{split}.json").is_file():
                continue
            items = read_split("tallrec", root / domain, split)
            assert len(items) == n and {e.target for e in items} == {"Yes", "No"}
