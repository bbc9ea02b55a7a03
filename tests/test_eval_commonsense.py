"""PIQA, Social IQa, HellaSwag, WinoGrande: the published layouts, lm-evaluation-harness's scoring (checked by
hand on a stub LM with known log-probs), LLM-Adapters' generative protocol, bad input, and a tiny-model run."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import SHARED_DATA
from tests.tiny import build_tokenizer
from tuneforge.config import ModelConfig, TaskSpec, load
from tuneforge.eval import EvalError, evaluate, read_split
from tuneforge.eval.commonsense import BENCHMARKS, generated_choice, hellaswag_clean
from tuneforge.eval.lm import LM, Scored
from tuneforge.eval.prompts import Item
from tuneforge.eval.run import LoadedTask, run_task
from tuneforge.eval.tasks import build_task
from tuneforge.models.loader import load_model, load_tokenizer

SAMPLES = SHARED_DATA / "llm_adapters" / "format_samples"


def record(instruction: str, answer: str) -> dict[str, str]:
    return {"instruction": instruction, "input": "", "output": f"the correct answer is {answer}", "answer": answer}


def piqa(goal: str, sols: Sequence[str], answer: str) -> dict[str, str]:
    listed = "\n\n".join(f"Solution{k}: {s}" for k, s in enumerate(sols, start=1))
    return record(
        f"Please choose the correct solution to the question: {goal}\n\n{listed}\n\n"
        f"Answer format: {'/'.join(f'solution{k}' for k in range(1, len(sols) + 1))}",
        answer,
    )


def siqa(question: str, answers: Sequence[str], answer: str) -> dict[str, str]:
    listed = " ".join(f"Answer{k}: {a}" for k, a in enumerate(answers, start=1))
    return record(
        f"Please choose the correct answer to the question: {question}\n\n{listed}\n\n"
        "Answer format: answer1/answer2/answer3",
        answer,
    )


def winogrande(sentence: str, options: Sequence[str], answer: str) -> dict[str, str]:
    listed = " ".join(f"Option{k}: {o}" for k, o in enumerate(options, start=1))
    return record(
        "Please choose the correct answer to fill in the blank to complete the given sentence: "
        f"{sentence}\n\n{listed} Answer format: option1/option2",
        answer,
    )


def hellaswag(context: str, endings: Sequence[str], answer: str) -> dict[str, str]:
    listed = " ".join(f"Ending{k}: {e}" for k, e in enumerate(endings, start=1))
    return record(
        f"Please choose the correct ending to complete the given sentence: {context}\n\n{listed}\n\n"
        "Answer format: ending1/ending2/ending3/ending4",
        answer,
    )


PIQA = [
    piqa("How do you keep soup warm?", ["Put the lid on the pot.", "Put the pot in the fridge."], "solution1"),
    piqa("How do you dry wet shoes?", ["Fill them with ice.", "Stuff them with newspaper."], "solution2"),
]
SIQA = [
    siqa("Ash gave Kai a gift. How would Kai feel as a result?", ["grateful", "angry", "bored"], "answer1"),
    siqa("Sam missed the bus. What will Sam want to do next?", ["dance", "sleep", "walk to school"], "answer3"),
]
WINOGRANDE = [
    winogrande("The trophy does not fit in the suitcase because the _ is too big.", ["trophy", "suitcase"], "option1"),
    winogrande("The cup broke the plate when the _ fell on it.", ["plate", "cup"], "option2"),
]
HELLASWAG = [
    hellaswag(
        "Removing ice from car: Then, the man writes over the snow covering the window of a car. then",
        [", the man adds wax to the windshield.", ", a person boards a ski lift.",
         ", the man puts on a christmas coat.", ", the man continues removing the snow on his car."],
        "ending4",
    ),
    hellaswag(
        "Home and Garden: [header] How to grow tomatoes [title] Pick a sunny spot.",
        ["[step] Tomatoes need six hours of sun. [title] Water them daily.", "[step] Paint the pot blue.",
         "[step] Sing to the seeds.", "[step] Bury the phone."],
        "ending1",
    ),
]  # fmt: skip
# HellaSwag's own JSONL: rowanz/hellaswag (integer label) and the Hugging Face copy (string label, no ind)
HELLASWAG_JSONL = [
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
     "source_id": "activitynet~v_-JhWjGDPHMY"},
    {"activity_label": "Home and Garden", "ctx_a": "[header] How to grow tomatoes [title] Pick a sunny spot.",
     "ctx_b": "", "ctx": "[header] How to grow tomatoes [title] Pick a sunny spot.", "label": "0",
     "endings": ["[step] Tomatoes need six hours of sun.", "[step] Paint the pot blue.",
                 "[step] Sing to the seeds.", "[step] Bury the phone."]},
]  # fmt: skip


def write_commonsense(root: Path) -> dict[str, Path]:
    """One small file per layout; returns name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, rows in (("piqa", PIQA), ("siqa", SIQA), ("winogrande", WINOGRANDE), ("hellaswag", HELLASWAG)):
        out[name] = root / f"{name}.json"
        out[name].write_text(json.dumps(rows))
    folder = root / "hellaswag_jsonl"
    folder.mkdir()
    for split in ("val", "train"):
        (folder / f"hellaswag_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HELLASWAG_JSONL))
    out["hellaswag_jsonl"] = folder
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_commonsense(tmp_path_factory.mktemp("commonsense"))


# --- layouts -----------------------------------------------------------------------------------------


def test_llm_adapters_commonsense_layouts(files: dict[str, Path]) -> None:
    p = read_split("llm_adapters", files["piqa"], "test")
    assert p[1].question == "How do you dry wet shoes?" and p[1].choices == ("Fill them with ice.",
                                                                             "Stuff them with newspaper.")  # fmt: skip
    assert [e.gold for e in p] == [0, 1] and p[0].choice_label == "solution"
    assert p[0].prompt is not None and p[0].prompt.endswith("Answer format: solution1/solution2")
    s = read_split("llm_adapters", files["siqa"], "test")
    assert s[1].choices == ("dance", "sleep", "walk to school") and s[1].gold == 2 and s[1].choice_label == "answer"
    w = read_split("llm_adapters", files["winogrande"], "test")
    assert w[0].question == "The trophy does not fit in the suitcase because the _ is too big."
    assert w[1].choices == ("plate", "cup") and w[1].gold == 1 and w[1].choice_label == "option"
    h = read_split("llm_adapters", files["hellaswag"], "test")
    assert h[0].question.startswith("Removing ice from car: Then,") and h[0].question.endswith(". then")
    assert len(h[0].choices) == 4 and h[0].gold == 3 and h[1].gold == 0 and h[0].choice_label == "ending"
    assert h[1].choices[0] == "[step] Tomatoes need six hours of sun. [title] Water them daily."  # kept as published


def test_hellaswag_jsonl_layout(files: dict[str, Path]) -> None:
    got = read_split("hellaswag", files["hellaswag_jsonl"], "val")  # hellaswag_val.jsonl in the folder
    roof, garden = got
    assert roof.id == "24" and roof.gold == 3 and garden.id == "1" and garden.gold == 0
    assert roof.question == "Roof shingle removal: A man is sitting on a roof. He"  # ctx_b capitalised
    assert hellaswag_clean(garden.question) == "Home and Garden: How to grow tomatoes. Pick a sunny spot."
    assert roof.prompt == (
        "Please choose the correct ending to complete the given sentence: Roof shingle removal: A man is sitting "
        "on a roof. he\n\nEnding1: is using wrap to wrap a pair of skis. Ending2: is ripping level tiles off. "
        "Ending3: is holding a rubik's cube. Ending4: starts pulling up roofing on a roof.\n\n"
        "Answer format: ending1/ending2/ending3/ending4"
    )  # LLM-Adapters' instruction, so the generative protocol runs on this layout too
    assert roof.reference == "the correct answer is ending4"


needs_shared = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"format samples not found at {SAMPLES}")


@needs_shared
@pytest.mark.parametrize(
    ("name", "label", "n_choices"), [("piqa", "solution", 2), ("social_i_qa", "answer", 3), ("winogrande", "option", 2)]
)
def test_format_samples_read_in_place(name: str, label: str, n_choices: int) -> None:
    path = SAMPLES / f"{name}.json"
    rows = json.loads(path.read_text())
    got = read_split("llm_adapters", path, "test")
    assert len(got) == len(rows) == 10
    assert {len(e.choices) for e in got} == {n_choices} and {e.choice_label for e in got} == {label}
    assert [f"{label}{(e.gold or 0) + 1}" for e in got] == [r["answer"] for r in rows]
    assert all(e.question and e.question in (e.prompt or "") for e in got)
    if label == "option":
        assert all(e.question.count("_") >= 1 for e in got)


# --- lm-evaluation-harness scoring on a stub LM --------------------------------------------------------


class StubLM(LM):
    """Characters as token ids; log P(continuation | context) looked up in a table of (context, continuation)
    texts, so every score a test expects can be worked out by hand."""

    def __init__(self, table: dict[tuple[str, str], float] | None = None, texts: Sequence[str] = ()) -> None:
        self.table = table or {}
        self.texts = list(texts)
        self.tokenizer = build_tokenizer("chatml")
        self.seen: list[tuple[str, str]] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def loglikelihoods(self, pairs: Sequence[tuple[list[int], list[int]]], desc: str = "") -> list[Scored]:
        texts = [("".join(map(chr, c)), "".join(map(chr, t))) for c, t in pairs]
        self.seen += texts
        return [Scored(self.table[t], len(t[1])) for t in texts]

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, desc: str = "") -> list[str]:
        self.prompts = [self.tokenizer.decode(p) for p in prompts]
        return self.texts[: len(prompts)]


def _run(kind: str, fmt: str, path: Path, lm: StubLM, **spec: Any) -> dict[str, float]:
    examples = read_split(fmt, path, "val" if fmt == "hellaswag" else "test")
    task = build_task(TaskSpec(type=kind, format=fmt, path=str(path), **spec), examples, "t")  # type: ignore[arg-type]
    result = run_task(lm, LoadedTask(kind, task, [Item(e) for e in examples]), "stub")
    return {k: v.value() for k, v in result.scores.metrics.items()}


def test_winogrande_partial_scoring_picks_the_likelier_continuation(files: dict[str, Path]) -> None:
    # Each option fills the blank in the context; both are scored on the same text after the blank.
    table = {
        ("The trophy does not fit in the suitcase because the trophy", " is too big."): -2.0,
        ("The trophy does not fit in the suitcase because the suitcase", " is too big."): -5.0,  # gold: option1
        ("The cup broke the plate when the plate", " fell on it."): -3.0,
        ("The cup broke the plate when the cup", " fell on it."): -4.0,  # gold option2, but less likely
    }
    lm = StubLM(table)
    assert _run("winogrande", "llm_adapters", files["winogrande"], lm) == {"acc": 0.5}  # no acc_norm: same text
    assert set(lm.seen) == set(table)  # exactly the partial pairs, nothing else scored
    table[("The cup broke the plate when the cup", " fell on it.")] = -1.0
    assert _run("winogrande", "llm_adapters", files["winogrande"], StubLM(table)) == {"acc": 1.0}


def test_piqa_acc_and_acc_norm_arithmetic(files: dict[str, Path]) -> None:
    q0, q1 = "Question: How do you keep soup warm?\nAnswer:", "Question: How do you dry wet shoes?\nAnswer:"
    table = {
        # item 0 (gold 0): raw -6 > -9 picks 0; per character -6/23 = -0.261 > -9/26 = -0.346 picks 0 too
        (q0, " Put the lid on the pot."): -6.0,
        (q0, " Put the pot in the fridge."): -9.0,
        # item 1 (gold 1): raw -5 > -6.5 picks 0 (wrong); per character -5/19 = -0.263 < -6.5/26 = -0.250 picks 1
        (q1, " Fill them with ice."): -5.0,
        (q1, " Stuff them with newspaper."): -6.5,
    }
    assert len("Put the lid on the pot.") == 23 and len("Stuff them with newspaper.") == 26
    assert len("Fill them with ice.") == 19
    assert _run("piqa", "llm_adapters", files["piqa"], StubLM(table)) == {"acc": 0.5, "acc_norm": 1.0}


def test_siqa_and_hellaswag_prompts_are_the_harness_ones(files: dict[str, Path]) -> None:
    q0 = "Q: Ash gave Kai a gift. How would Kai feel as a result?\nA:"
    q1 = "Q: Sam missed the bus. What will Sam want to do next?\nA:"
    table = {(q0, " grateful"): -1.0, (q0, " angry"): -2.0, (q0, " bored"): -3.0,
             (q1, " dance"): -1.0, (q1, " sleep"): -9.0, (q1, " walk to school"): -3.0}  # fmt: skip
    # item 1: raw picks "dance" (wrong); per character -1/5 = -0.2 vs -3/14 = -0.214: "dance" again
    assert _run("siqa", "llm_adapters", files["siqa"], StubLM(table)) == {"acc": 0.5, "acc_norm": 0.5}
    roof = "Roof shingle removal: A man is sitting on a roof. He"
    garden = "Home and Garden: How to grow tomatoes. Pick a sunny spot."
    endings = ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
               "starts pulling up roofing on a roof."]  # fmt: skip
    table = {(roof, f" {e}"): -10.0 for e in endings} | {(roof, " starts pulling up roofing on a roof."): -1.0}
    # the harness's clean-up: "[step] " leaves a leading space, kept in the continuation as the harness does
    for text, lp in [(" Tomatoes need six hours of sun.", -1.0), (" Paint the pot blue.", -2.0),
                     (" Sing to the seeds.", -3.0), (" Bury the phone.", -4.0)]:  # fmt: skip
        table[(garden, f" {text}")] = lp
    lm = StubLM(table)
    assert _run("hellaswag", "hellaswag", files["hellaswag_jsonl"], lm) == {"acc": 1.0, "acc_norm": 1.0}
    assert set(lm.seen) == set(table)


def test_fewshot_and_instruction_in_the_plain_prompt(files: dict[str, Path]) -> None:
    examples = read_split("llm_adapters", files["winogrande"], "test")
    spec = TaskSpec(type="winogrande", format="llm_adapters", path="x", fewshot=1, instruction="Fill the blank.")
    task = build_task(spec, examples, "t")
    (req,) = task.prepare([Item(examples[1], shots=(examples[0],))], StubLM())
    ctx, cont = ("".join(map(chr, ids)) for ids in req.pairs[0])
    shot = "The trophy does not fit in the suitcase because the trophy is too big."  # the gold option filled in
    assert ctx == f"Fill the blank.\n\n{shot}\n\nThe cup broke the plate when the plate" and cont == " fell on it."


def test_generative_protocol_of_llm_adapters(files: dict[str, Path]) -> None:
    # LLM-Adapters takes the first label it finds, as written: "Solution1" (capital) names nothing.
    lm = StubLM(texts=["the correct answer is solution1", "Solution2, so the correct answer is solution1"])
    got = _run("piqa", "llm_adapters", files["piqa"], lm, mode="generate", max_new_tokens=8)
    assert got == {"acc": 0.5, "answered": 1.0}
    assert "Answer format: solution1/solution2" in lm.prompts[0] and "<|im_start|>assistant" in lm.prompts[0]
    b = BENCHMARKS["hellaswag"]
    assert [generated_choice(b, t) for t in ["ending3", "Ending3", "ending4 or ending1", "ending5", ""]] == [
        2, -1, 3, -1, -1]  # fmt: skip
    lm = StubLM(texts=["answer3", "I cannot tell"])
    assert _run("siqa", "llm_adapters", files["siqa"], lm, mode="generate") == {"acc": 0.0, "answered": 0.5}


def test_multiple_choice_type_reads_the_new_layouts(files: dict[str, Path]) -> None:
    examples = read_split("llm_adapters", files["winogrande"], "test")
    task = build_task(TaskSpec(type="multiple_choice", format="llm_adapters", path="x"), examples, "t")
    lm = StubLM()
    lm.encode = lambda text: list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[method-assign]
    (req, _) = task.prepare([Item(e) for e in examples], lm)
    assert "Fill in the blank (_) of the sentence." in lm.tokenizer.decode(req.pairs[0][0])
    assert len(req.pairs) == 2


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([PIQA[0], piqa("How do you open a jar?", ["Twist the lid."], "solution1")],
         r"row 2: only one choice \(Solution1: 'Twist the lid.'\)"),
        ([winogrande("The cat sat on the mat.", ["cat", "mat"], "option1")],
         "row 1: the WinoGrande sentence has no blank"),
        ([winogrande("The cat sat on the _", ["cat", "mat"], "option1")], "row 1: nothing follows the blank"),
        ([SIQA[0], siqa("Q?", ["a", "b", "c"], "answer4")],
         r"row 2: answer 'answer4' does not name one of 3 choices \(answer1/answer2/answer3\)"),
        ([piqa("Q?", ["a", "b"], "answer1")], "row 1: answer 'answer1' does not name one of 2 choices"),
        ([record("Please choose the correct solution to the question: Q?\n\nSolution1: a\n\nSolution3: b\n\n"
                 "Answer format: solution1/solution2", "solution1")],
         "row 1: the choices must be numbered Solution1, Solution2, ... in order; found Solution1, Solution3"),
        ([record("Please choose the correct ending to complete the given sentence: A man", "ending1")],
         "row 1: the instruction starts like LLM-Adapters' ending layout"),
    ],
)  # fmt: skip
def test_bad_llm_adapters_records_name_file_and_row(tmp_path: Path, rows: list[dict], message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(EvalError, match=message) as e:
        read_split("llm_adapters", path, "test")
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": ""}, "line 1: no label .*evaluate the val split"),
        ({"label": 4}, "line 1: label '4' is not an index of the 4 endings"),
        ({"endings": ["only one"]}, "line 1: 'endings' must be a list of two or more texts"),
        ({"endings": ["a", " "]}, "line 1: ending 2 is empty"),
    ],
)
def test_bad_hellaswag_rows(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = tmp_path / "hellaswag_val.jsonl"
    path.write_text(json.dumps(HELLASWAG_JSONL[0] | change) + "\n")
    with pytest.raises(EvalError, match=message.replace("line 1", re.escape(f"{path}:1"))):
        read_split("hellaswag", path, "val")


def test_task_refuses_another_benchmarks_layout_and_chat_settings(files: dict[str, Path]) -> None:
    wino = read_split("llm_adapters", files["winogrande"], "test")
    with pytest.raises(EvalError, match=r"t: item 0 of .* is not in PIQA's layout .*Solution1"):
        build_task(TaskSpec(type="piqa", format="llm_adapters", path="wino.json"), wino, "t")
    with pytest.raises(EvalError, match="system applies to mode=generate only"):
        build_task(TaskSpec(type="winogrande", format="llm_adapters", path="x", system="Be brief."), wino, "t")
    with pytest.raises(EvalError, match="cannot feed a piqa task; allowed: llm_adapters"):
        build_task(TaskSpec(type="piqa", format="csqa", path="x"), wino, "t")


# --- the real log-likelihood engine and a whole run on the tiny model ---------------------------------


def test_shared_continuation_after_different_contexts_on_the_tiny_model(tiny_model_dir: Path) -> None:
    cfg = ModelConfig(path=str(tiny_model_dir))
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok)
    lm = LM(model, tok, batch_size=2, progress=False)
    ctx, cont = lm.encode_pair("Question: what fits?\nAnswer: ", "the box")  # the space moves to the continuation
    assert ctx == lm.encode("Question: what fits?\nAnswer:") and ctx + cont == lm.encode(
        "Question: what fits?\nAnswer: the box"
    )
    pairs = [lm.encode_pair(f"The trophy does not fit because the {o}", " is too big.") for o in ("trophy", "suitcase")]
    assert pairs[0][1] == pairs[1][1] and pairs[0][0] != pairs[1][0]
    got = lm.loglikelihoods(pairs * 2)
    for (c, t), s in zip(pairs * 2, got, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([c + t])).logits[0, :-1], -1)
        assert s.logprob == pytest.approx(sum(float(logp[len(c) - 1 + j, x]) for j, x in enumerate(t)), abs=1e-4)


def test_every_commonsense_type_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path, files: dict) -> None:
    tasks = [
        {"type": "piqa", "format": "llm_adapters", "path": str(files["piqa"])},
        {"type": "siqa", "format": "llm_adapters", "path": str(files["siqa"])},
        {"type": "winogrande", "format": "llm_adapters", "path": str(files["winogrande"])},
        {"type": "hellaswag", "format": "llm_adapters", "path": str(files["hellaswag"])},
        {"type": "hellaswag", "format": "hellaswag", "path": str(files["hellaswag_jsonl"]), "split": "val",
         "name": "hellaswag_2shot", "fewshot": 2, "fewshot_split": "train"},
        {"type": "piqa", "format": "llm_adapters", "path": str(files["piqa"]), "name": "piqa_gen", "mode": "generate",
         "max_new_tokens": 4},
        {"type": "multiple_choice", "format": "llm_adapters", "path": str(files["piqa"]), "name": "piqa_chat"},
    ]  # fmt: skip
    cfg = load({"name": "cs", "model": {"path": str(tiny_model_dir)}, "output": {"dir": str(tmp_path / "runs")},
                "eval": {"tasks": tasks, "bootstrap": 20, "batch_size": 4}})  # fmt: skip
    evaluate(cfg, progress=False)
    data = json.loads((tmp_path / "runs" / "cs" / "eval" / "report.json").read_text())
    scores = {t["name"]: t["scores"]["base"] for t in data["tasks"]}
    assert set(scores) == {"piqa", "siqa", "winogrande", "hellaswag", "hellaswag_2shot", "piqa_gen", "piqa_chat"}
    assert set(scores["winogrande"]) == {"acc"} and set(scores["piqa"]) == {"acc", "acc_norm"}
    assert set(scores["piqa_gen"]) == {"acc", "answered"}
    assert all(0 <= v["value"] <= 1 for s in scores.values() for v in s.values())
