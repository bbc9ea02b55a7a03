"""Readers: small files written here in every layout, and slices of the public copies in ../shared/data."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tuneforge.eval import EvalError, read_split

# --- small files in each layout, shared with test_eval_tasks -----------------------------------------

MMLU_ROWS = {
    "astronomy": [
        ("What is the Sun?", "a star", "a planet", "a moon", "a comet", "A"),
        ("How many moons has Mars?", "0", "1", "2", "3", "C"),
        ("Which planet is red?", "Venus", "Mars", "Earth", "Mercury", "B"),
    ],
    "anatomy": [("How many hearts has a human?", "1", "2", "3", "4", "A")],
}


def write_mmlu_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for split in ("test", "dev"):
            for subject, rows in MMLU_ROWS.items():
                text = "".join(",".join(f'"{c}"' for c in row) + "\n" for row in rows)
                z.writestr(f"data/{split}/{subject}_{split}.csv", text)
    return path


def arc_item(q: str, choices: list[str], k: int) -> dict[str, str]:
    listed = " ".join(f"Answer{i + 1}: {c}" for i, c in enumerate(choices))
    fmt = "/".join(f"answer{i + 1}" for i in range(len(choices)))
    instruction = f"Please choose the correct answer to the question: {q}\n\n{listed}\n\nAnswer format: {fmt}"
    return {
        "instruction": instruction,
        "input": "",
        "output": f"the correct answer is answer{k}",
        "answer": f"answer{k}",
    }


def write_layouts(root: Path) -> dict[str, Path]:
    """One small dataset per reader layout; returns name -> path (file or folder)."""
    root.mkdir(parents=True, exist_ok=True)
    arc = root / "ARC"
    arc.mkdir()
    items = [arc_item("What do plants need?", ["light", "rocks", "plastic"], 1),
             arc_item("What is ice?", ["hot water", "frozen water", "sand", "air"], 2),
             arc_item("What do bees make?", ["milk", "silk", "honey", "wool"], 3)]  # fmt: skip
    (arc / "test.json").write_text(json.dumps(items))
    (arc / "train.json").write_text(json.dumps(items[:2]))
    boolq = root / "boolq.json"
    boolq.write_text(json.dumps([
        {"instruction": "Please answer the following question with true or false, question: is water wet?\n\n"
         "Answer format: true/false", "input": "", "output": "the correct answer is true", "answer": "true"},
        {"instruction": "Please answer the following question with true or false, question: is fire cold?\n\n"
         "Answer format: true/false", "input": "", "output": "the correct answer is false", "answer": "false"},
    ]))  # fmt: skip
    addsub = root / "AddSub"
    addsub.mkdir()
    math_items = [
        {"instruction": "Tom has 3 apples and gets 4 more. How many now?", "input": "",
         "output": "\nA: 3 + 4 = 7. The answer is 7.", "answer": "7"},
        {"instruction": "Ann had 10 pens and lost 2. How many are left?", "input": "",
         "output": "\nA: 10 - 2 = 8. The answer is 8.", "answer": "8.0"},
    ]  # fmt: skip
    (addsub / "test.json").write_text(json.dumps(math_items))
    (addsub / "train.json").write_text(json.dumps(math_items))
    csqa = root / "csqa.jsonl"
    csqa.write_text("".join(json.dumps({
        "id": f"q{i}", "question": q, "answerKey": key,
        "choices": {"label": ["A", "B", "C"], "text": texts}}) + "\n"
        for i, (q, texts, key) in enumerate([("Where do fish live?", ["water", "trees", "sky"], "A"),
                                             ("What is hot?", ["snow", "fire", "ice"], "B")])))  # fmt: skip
    sst = root / "SST-2"
    sst.mkdir()
    (sst / "test.tsv").write_text(
        'sentence\tlabel\na charming , "funny" film \t1\ndull and boring \t0\nwonderful \t1\nbad \t0\n'
    )
    agnews = root / "agnews.tsv"
    agnews.write_text("Stocks fell today.\tBusiness\nThe team won.\tSports\nNew chip released.\tSci/Tech\n")
    tallrec = root / "tallrec.json"
    tallrec.write_text(json.dumps([
        {"instruction": 'Will the user like the book? Answer "Yes." or "No.".', "input": f"User Preference: {b}",
         "output": out} for b, out in [("A", "Yes."), ("B", "No."), ("C", "Yes."), ("D", "No.")]
    ]))  # fmt: skip
    gsm = root / "gsm8k"
    gsm.mkdir()
    gsm_items = [{"question": "Ann has 2 cats and 3 dogs. How many pets?", "answer": "2+3=<<2+3=5>>5\n#### 5"},
                 {"question": "A box has 1,000 nails; 1 is used. How many left?", "answer": "#### 999"}]  # fmt: skip
    for split in ("test", "train"):
        (gsm / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in gsm_items))
    bfcl = root / "bfcl"
    (bfcl / "possible_answer").mkdir(parents=True)
    fn = {"name": "add", "description": "Add two numbers.", "parameters": {"type": "dict", "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}  # fmt: skip
    simple = [{"id": f"simple_{i}", "question": [[{"role": "user", "content": f"Add {i} and 2."}]], "function": [fn]}
              for i in range(3)]  # fmt: skip
    (bfcl / "simple.json").write_text("".join(json.dumps(x) + "\n" for x in simple))
    answers = [{"id": f"simple_{i}", "ground_truth": [{"add": {"a": [i], "b": [2]}}]} for i in range(3)]
    (bfcl / "possible_answer" / "simple.json").write_text("".join(json.dumps(x) + "\n" for x in answers))
    irrelevant = [{"id": "irrelevance_0", "question": [[{"role": "user", "content": "Who wrote Hamlet?"}]],
                   "function": [fn]}]  # fmt: skip
    (bfcl / "irrelevance.json").write_text("".join(json.dumps(x) + "\n" for x in irrelevant))
    text = root / "held_out.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\nWhat is the capital of France? Paris.\n")
    gen = root / "dates.json"
    pairs = [("Convert to ISO date: 14 March 2021", "2021-03-14"), ("Translate to French: hello", "Bonjour")]
    gen.write_text(json.dumps([{"instruction": i, "input": "", "output": o} for i, o in pairs]))
    return {"mmlu": write_mmlu_zip(root / "mmlu.zip"), "arc": arc, "boolq": boolq, "addsub": addsub, "csqa": csqa,
            "sst2": sst, "agnews": agnews, "tallrec": tallrec, "gsm8k": gsm, "bfcl_simple": bfcl / "simple.json",
            "bfcl_irrelevance": bfcl / "irrelevance.json", "text": text, "gen": gen}  # fmt: skip


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_layouts(tmp_path_factory.mktemp("layouts"))


def test_exam_zip_read_in_place_and_unpacked(layouts: dict[str, Path], tmp_path: Path) -> None:
    got = read_split("mmlu", layouts["mmlu"], "test")
    assert [e.id for e in got] == ["anatomy/0", "astronomy/0", "astronomy/1", "astronomy/2"]
    mars = got[2]
    assert mars.choices == ("0", "1", "2", "3") and mars.gold == 2 and mars.target == "C"
    assert mars.subject == "astronomy"
    with zipfile.ZipFile(layouts["mmlu"]) as z:
        z.extractall(tmp_path)
    assert read_split("mmlu", tmp_path / "data", "test") == got


def test_ceval_and_cmmlu_headers(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "ceval.zip", "w") as z:
        z.writestr("val/law_val.csv", "id,question,A,B,C,D,answer,explanation\n0,问题,甲,乙,丙,丁,B,因为\n")
        z.writestr("test/law_test.csv", "id,question,A,B,C,D\n0,问题,甲,乙,丙,丁\n")
    (e,) = read_split("ceval", tmp_path / "ceval.zip", "val")
    assert (e.question, e.choices, e.gold, e.subject) == ("问题", ("甲", "乙", "丙", "丁"), 1, "law")
    with pytest.raises(EvalError, match="no answer column"):
        read_split("ceval", tmp_path / "ceval.zip", "test")
    with zipfile.ZipFile(tmp_path / "cmmlu.zip", "w") as z:
        z.writestr("test/arts.csv", ",Question,A,B,C,D,Answer\n0,问题,甲,乙,丙,丁,D\n")
    (c,) = read_split("cmmlu", tmp_path / "cmmlu.zip", "test")
    assert (c.gold, c.subject) == (3, "arts")


def test_llm_adapters_layout(layouts: dict[str, Path]) -> None:
    arc = read_split("llm_adapters", layouts["arc"], "test")
    assert arc[0].question == "What do plants need?" and arc[0].choices == ("light", "rocks", "plastic")
    assert [e.gold for e in arc] == [0, 1, 2]
    boolq = read_split("llm_adapters", layouts["boolq"], "test")
    assert boolq[1].question == "is fire cold?" and boolq[1].choices == ("true", "false") and boolq[1].gold == 1
    math = read_split("llm_adapters", layouts["addsub"], "test")
    assert math[1].target == "8.0" and math[1].reference == "10 - 2 = 8. The answer is 8." and not math[1].choices


def test_other_layouts(layouts: dict[str, Path]) -> None:
    csqa = read_split("csqa", layouts["csqa"], "test")
    assert csqa[1].choices == ("snow", "fire", "ice") and csqa[1].gold == 1 and csqa[1].id == "q1"
    sst = read_split("tsv", layouts["sst2"], "test")
    assert len(sst) == 4 and sst[0].question == 'a charming , "funny" film' and sst[0].target == "1"
    ag = read_split("tsv", layouts["agnews"], "test")
    assert [e.target for e in ag] == ["Business", "Sports", "Sci/Tech"]  # no header row: nothing skipped
    tr = read_split("alpaca", layouts["tallrec"], "test")
    assert tr[0].instruction.startswith("Will the user") and tr[0].question == "User Preference: A"
    assert tr[0].target == "Yes."
    gsm = read_split("gsm8k", layouts["gsm8k"], "test")
    assert [e.target for e in gsm] == ["5", "999"] and gsm[0].reference == "2+3=5\nThe answer is 5."
    simple = read_split("bfcl", layouts["bfcl_simple"], "test")
    assert simple[1].calls == ({"add": {"a": [1], "b": [2]}},) and json.loads(simple[1].tools)[0]["name"] == "add"
    assert read_split("bfcl", layouts["bfcl_irrelevance"], "test")[0].calls == ()
    assert [e.question for e in read_split("text", layouts["text"], "test")][1].startswith("What is")


def test_layout_errors(layouts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="no file for split 'validation'"):
        read_split("llm_adapters", layouts["arc"], "validation")
    with pytest.raises(EvalError, match="no MMLU CSV files for split 'val'"):
        read_split("mmlu", layouts["mmlu"], "val")
    lone = tmp_path / "lone.json"
    lone.write_text(json.dumps({"id": "simple_9", "question": [[{"role": "user", "content": "x"}]], "function": []}))
    with pytest.raises(EvalError, match="no possible answer for 'simple_9'"):
        read_split("bfcl", lone, "test")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([arc_item("q", ["a", "b"], 7)]))
    with pytest.raises(EvalError, match="does not name one of 2 choices"):
        read_split("llm_adapters", bad, "test")


# --- the public copies -------------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"public evaluation data not found at {SHARED_DATA} (../shared/data)"
)


@needs_shared
@pytest.mark.parametrize(
    ("fmt", "rel", "split", "count", "choices"),
    [
        ("mmlu", "mmlu_ceval_cmmlu/mmlu.zip", "test", 14042, 4),
        ("ceval", "mmlu_ceval_cmmlu/ceval.zip", "val", 1346, 4),
        ("cmmlu", "mmlu_ceval_cmmlu/cmmlu.zip", "test", 11582, 4),
        ("llm_adapters", "llm_adapters/dataset/ARC-Easy", "test", 2376, None),
        ("llm_adapters", "llm_adapters/dataset/ARC-Challenge", "test", 1172, None),
        ("llm_adapters", "llm_adapters/dataset/boolq", "test", 3270, 2),
        ("llm_adapters", "llm_adapters/dataset/openbookqa", "test", 500, 4),
        ("llm_adapters", "llm_adapters/dataset/AddSub", "test", 395, 0),
        ("csqa", "csqa/dev_rand_split.jsonl", "dev", 1221, 5),
        ("tsv", "sst2_agnews/SST-2", "test", 872, 0),
        ("tsv", "sst2_agnews/agnews/test.tsv", "test", 7600, 0),
        ("alpaca", "tallrec/book/test.json", "test", 2427, 0),
        ("gsm8k", "gsm8k", "test", 1319, 0),
        ("bfcl", "bfcl/BFCL_v4_simple_python.json", "test", 400, 0),
        ("bfcl", "bfcl/BFCL_v4_irrelevance.json", "test", 240, 0),
        ("bfcl", "bfcl/BFCL_v4_parallel.json", "test", 200, 0),
    ],
)
def test_public_copies_read_as_published(fmt: str, rel: str, split: str, count: int, choices: int | None) -> None:
    got = read_split(fmt, SHARED_DATA / rel, split)
    assert len(got) == count
    if choices is not None:
        assert {len(e.choices) for e in got} == {choices}
    else:  # ARC has a few 3- and 5-choice questions
        assert {len(e.choices) for e in got} <= {3, 4, 5} and all(0 <= (e.gold or 0) < len(e.choices) for e in got)
    assert all(e.question.strip() for e in got)
