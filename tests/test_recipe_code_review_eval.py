"""The code-review eval side: the `codereviewer` reader, the three task types and their metrics (BLEU-4, F1 and
exact match by hand), prompts as training renders them, and 2-step runs of mined data on the tiny model, then
base vs run on every task type."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_recipe_code_review import RECIPE, ROOT, make_repo
from tuneforge.cli import load_config
from tuneforge.config import ModelConfig, TaskSpec
from tuneforge.data.code_review import code_lines, record, user_turn
from tuneforge.data.formats import format_record, make_format_spec
from tuneforge.data.recipes import PrepareSettings, prepare
from tuneforge.data.recipes.code_review import ReviewSettings
from tuneforge.data.render import IGNORE_INDEX, render_conversation
from tuneforge.data.schema import Conversation
from tuneforge.eval import EvalError, evaluate, load_tasks, read_split
from tuneforge.eval import metrics as m
from tuneforge.eval.lm import LM, Scored
from tuneforge.eval.prompts import Item
from tuneforge.eval.tasks import Response, build_task, check_spec
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.stages import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
SAMPLE = ROOT.parent / "shared" / "data" / "codereviewer_sample"
PATCH = "@@ -1,3 +1,3 @@ def f():\n     x = 1\n-    return x\n+    return x + 1\n"
ROWS = [
    {"patch": PATCH, "y": 1, "msg": "Why add one here?", "id": 7},
    {"patch": PATCH.replace("+ 1", "+ 2"), "y": 0, "msg": ""},
    {"patch": PATCH.replace("+ 1", "+ 3"), "y": 1, "msg": "Name the constant."},
]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _task(kind: str, path: Path, **settings: Any) -> Any:
    spec = TaskSpec(type=kind, format="codereviewer", path=str(path), **settings)
    return build_task(spec, read_split("codereviewer", path, "test"), "eval.tasks[0]")


# ---- reader ---------------------------------------------------------------------------------------------


def test_reader_reads_patch_and_refinement_items(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "cr.jsonl", [*ROWS, {"old": "x = 1", "new": "x = 2", "comment": "use two"}])
    items = read_split("codereviewer", f, "test")
    assert [e.meta for e in items[:2]] == [
        {"source": f"{f}:1", "patch": PATCH, "y": 1, "msg": "Why add one here?"},
        {"source": f"{f}:2", "patch": ROWS[1]["patch"], "y": 0, "msg": ""},
    ]
    assert items[3].meta == {"source": f"{f}:4", "old": "x = 1", "new": "x = 2", "comment": "use two"}
    assert [e.id for e in items] == ["0", "1", "2", "3"] and items[0].question == PATCH


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"patch": PATCH, "y": 2}, "field 'y' is 2; it must be 1"),
        ({"patch": PATCH, "y": True}, "field 'y' is True"),
        ({"patch": 5}, "field 'patch' must be text, got int"),
        ({"patch": "  \n"}, "field 'patch' is empty"),
        ({"patch": PATCH, "msg": ["a"]}, "field 'msg' must be text, got list"),
        ({"old": "a", "new": "b"}, "a refinement item needs 'comment' too"),
        ({"diff": "x"}, "neither 'patch' .* this record has fields: 'diff'"),
    ],
)
def test_reader_errors_name_file_line_and_field(tmp_path: Path, row: dict[str, Any], message: str) -> None:
    f = _jsonl(tmp_path / "bad.jsonl", [ROWS[0], row])
    with pytest.raises(EvalError, match=rf"bad.jsonl:2: {message}"):
        read_split("codereviewer", f, "test")


def test_tasks_refuse_items_without_what_they_score(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "cls.jsonl", ROWS)
    with pytest.raises(EvalError, match=r"cls.jsonl:2: an empty field 'msg', which a review_comment item needs"):
        _task("review_comment", f)
    no_label = _jsonl(tmp_path / "msg.jsonl", [{"patch": PATCH, "msg": "hm"}])
    with pytest.raises(EvalError, match=r"msg.jsonl:1: no field 'y', which a review_necessity item needs"):
        _task("review_necessity", no_label)
    negatives = _jsonl(tmp_path / "neg.jsonl", [ROWS[1]])
    with pytest.raises(EvalError, match="no item has y=1"):
        _task("review_necessity", negatives)
    with pytest.raises(EvalError, match=r"no field 'old', which a code_refinement item needs"):
        _task("code_refinement", f)
    with pytest.raises(EvalError, match="labels does not apply to a review_necessity task"):
        check_spec(TaskSpec(type="review_necessity", format="codereviewer", path=str(f), labels=["a"]), "t")
    with pytest.raises(EvalError, match="cannot feed a review_comment task"):
        check_spec(TaskSpec(type="review_comment", format="alpaca", path=str(f)), "t")


# ---- metrics by hand --------------------------------------------------------------------------------------


def test_review_tokens_split_words_digits_and_every_symbol() -> None:
    assert m.review_tokens("x_y(z)==1.5, Ok") == ["x", "_", "y", "(", "z", ")", "=", "=", "1", ".", "5", ",", "ok"]


def test_smooth_bleu4_by_hand() -> None:
    # p1 = 5/6; 2-4-grams add one: (3+1)/(5+1), (1+1)/(4+1), (0+1)/(3+1); equal lengths: no brevity penalty
    assert m.smooth_bleu4("the cat sat on the mat", "The cat is on the mat") == pytest.approx((1 / 18) ** 0.25)
    # "the cat" matches everything it has (1, (1+1)/(1+1), (0+1)/(0+1), 1), penalty 1 - (6+1)/(2+1) = -4/3
    assert m.smooth_bleu4("the cat", "the cat sat on the mat") == pytest.approx(math.exp(-4 / 3))
    assert m.smooth_bleu4("same words here", "Same words here.") == pytest.approx(math.exp(1 - 5 / 4))
    assert m.smooth_bleu4("", "") == 1.0 and m.smooth_bleu4("a b", "") < 1e-70
    rows = m.bleu4_rows(["the cat sat on the mat", "the cat"], ["the cat is on the mat", "the cat sat on the mat"])
    assert rows.value() == pytest.approx(50 * ((1 / 18) ** 0.25 + math.exp(-4 / 3)))  # the mean, x 100


def test_binary_f1_precision_recall_by_hand() -> None:
    got = m.binary_rows([True, True, True, False], [True, False, False, True])  # tp 1, fp 2, fn 1
    assert got["precision"].value() == pytest.approx(1 / 3) and got["recall"].value() == pytest.approx(1 / 2)
    assert got["f1"].value() == pytest.approx(2 / 5)
    none = m.binary_rows([False, False], [True, False])
    assert (none["precision"].value(), none["recall"].value(), none["f1"].value()) == (0.0, 0.0, 0.0)


def test_code_exact_match_folds_whitespace_only() -> None:
    assert code_lines("a  =  1\n\tb\n") == code_lines("a = 1 b") and code_lines("a=1") != code_lines("a = 1")


def test_necessity_scores_from_known_log_probabilities(tmp_path: Path) -> None:
    task = _task("review_necessity", _jsonl(tmp_path / "cls.jsonl", ROWS))
    items = [Item(e) for e in read_split("codereviewer", tmp_path / "cls.jsonl", "test")]
    said = [(-2.0, -1.0), (-3.0, -0.5), (-0.1, -4.0)]  # (no, yes): yes, yes, no against gold yes, no, yes
    responses = [Response((Scored(no, 1), Scored(yes, 1))) for no, yes in said]
    scored = task.score(items, responses)
    assert [p["pred"] for p in scored.predictions] == ["yes", "yes", "no"]
    assert scored.predictions[0]["p_yes"] == pytest.approx(1 / (1 + math.exp(-1)))
    values = {k: v.value() for k, v in scored.metrics.items()}
    assert values == pytest.approx({"f1": 0.5, "precision": 0.5, "recall": 0.5, "accuracy": 1 / 3, "auc": 0.0})


def test_refinement_scores_exact_match_and_bleu4(tmp_path: Path) -> None:
    rows = [{"old": "x = 1", "new": "x = 2\ny = x", "comment": "use two"}, {"old": "a", "new": "b c", "comment": "z"}]
    task = _task("code_refinement", _jsonl(tmp_path / "ref.jsonl", rows))
    items = [Item(e) for e in read_split("codereviewer", tmp_path / "ref.jsonl", "test")]
    scored = task.score(items, [Response(text="x = 2   y = x"), Response(text="b")])
    assert scored.metrics["exact_match"].value() == 0.5
    assert scored.metrics["bleu4"].value() == pytest.approx(50 * (1 + math.exp(1 - 3 / 2)))
    assert task.primary == "bleu4" and scored.predictions[1] == {"id": "1", "reference": "b c", "text": "b"}


# ---- prompts on the tiny model: what training renders ---------------------------------------------------


@pytest.mark.parametrize("style", ["instruction", "raw"])
def test_necessity_scores_the_answers_training_labels(tmp_path: Path, tiny_model_dir: Path, style: str) -> None:
    f = _jsonl(tmp_path / "cls.jsonl", ROWS)
    task = _task("review_necessity", f, input_style=style)
    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    lm = LM(load_model(ModelConfig(path=str(tiny_model_dir)), tok), tok, progress=False)
    items = [Item(e) for e in read_split("codereviewer", f, "test")]
    for item, req in zip(items, task.prepare(items, lm), strict=True):
        for answer, (ctx, cont) in zip(("no", "yes"), req.pairs, strict=True):
            trained = record("review_necessity", style, item.example.meta["patch"], answer)  # type: ignore[arg-type]
            conv = format_record("alpaca", trained, make_format_spec("alpaca"), "mined:1")
            assert isinstance(conv, Conversation)
            rendered = render_conversation(tok, conv, cutoff_len=4096)
            assert rendered is not None
            first = next(i for i, label in enumerate(rendered.labels) if label != IGNORE_INDEX)
            assert rendered.input_ids[:first] == ctx  # the same prompt, token for token
            labelled = [t for t in rendered.labels if t != IGNORE_INDEX]
            assert cont == labelled[: len(cont)] and len(cont) == len(labelled)
        shown = tok.decode(req.pairs[0][0])
        assert ("Does this code change need a review comment?" in shown) is (style == "instruction")


def test_comment_prompt_is_the_mined_records_user_turn(tmp_path: Path, tiny_model_dir: Path) -> None:
    f = _jsonl(tmp_path / "msg.jsonl", [ROWS[0]])
    task = _task("review_comment", f)
    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    lm = LM(load_model(ModelConfig(path=str(tiny_model_dir)), tok), tok, progress=False)
    (req,) = task.prepare([Item(e) for e in read_split("codereviewer", f, "test")], lm)
    assert req.prompt is not None and user_turn("review_comment", "instruction", PATCH) in tok.decode(req.prompt)
    assert task.max_new_tokens == 64


# ---- 2-step runs of mined data, then base vs run ---------------------------------------------------------


def _mined(tmp_path: Path, name: str, style: str) -> Path:
    repo = tmp_path / "git"
    if not repo.exists():
        make_repo(tmp_path / "git-root").rename(repo)
    out = tmp_path / "data"
    review = ReviewSettings(input_style=style, holdout=0.3)  # type: ignore[arg-type]  # the newest 2 commits
    prepare([repo], out, PrepareSettings(name, ["code_review"], review=review))
    return out


def _config(tmp_path: Path, model: Path, data: Path, dataset: str, method: dict[str, Any], **prep: Any) -> Any:
    raw = {
        "name": f"cr-{method['name']}",
        "stage": "sft",
        "model": {"path": str(model)},
        "prepare": prep,
        "data": {"dataset_dir": str(data), "datasets": [{"name": dataset}], "cutoff_len": 384},
        "method": method,
        "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-2, "logging_steps": 1},
        "output": {"dir": str(tmp_path / "runs")},
        "eval": {"bootstrap": 50, "batch_size": 4, "tasks": [
            {"name": "necessity", "type": "review_necessity", "format": "codereviewer",
             "path": str(data / "cr_review_necessity.jsonl")},
            {"name": "comment", "type": "review_comment", "format": "codereviewer", "max_new_tokens": 6,
             "path": str(data / "cr_review_comment_test.jsonl")},
            {"name": "refinement", "type": "code_refinement", "format": "codereviewer", "max_new_tokens": 6,
             "path": str(data / "cr_code_refinement_test.jsonl")},
        ]},
    }  # fmt: skip
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_config(path, [])


def test_two_step_lora_run_on_mined_comments_then_every_task(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _mined(tmp_path, "cr", "instruction")
    cfg = _config(tmp_path, tiny_model_dir, data, "cr_review_comment", {"name": "lora", "r": 4, "alpha": 8})
    result = run_stage(cfg)
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    report = evaluate(cfg, progress=False).data
    assert [x["label"] for x in report["models"]] == ["base", "cr-lora"]
    want = {"necessity": "f1", "comment": "bleu4", "refinement": "bleu4"}
    for spec, (name, primary) in zip(cfg.eval.tasks, want.items(), strict=True):
        entry = next(t for t in report["tasks"] if t["name"] == name)
        n = len(Path(spec.path).read_text().splitlines())
        assert entry["primary"] == primary and entry["n"] == n > 0
        for label in ("base", "cr-lora"):
            value = entry["scores"][label][primary]["value"]
            assert 0 <= value <= (1 if primary == "f1" else 100)
    refinement = next(t for t in report["tasks"] if t["name"] == "refinement")
    assert set(refinement["scores"]["base"]) == {"bleu4", "exact_match"}


def test_two_step_prefix_tuning_run_on_raw_necessity(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _mined(tmp_path, "cr", "raw")
    method = {"name": "prefix_tuning", "num_virtual_tokens": 4}
    cfg = _config(tmp_path, tiny_model_dir, data, "cr_review_necessity", method, input_style="raw")
    assert all(t.spec.input_style == "raw" for t in (lt.task for lt in load_tasks(cfg)))  # from prepare.input_style
    assert json.loads((data / "cr_review_necessity.jsonl").read_text().splitlines()[0])["instruction"] == ""
    result = run_stage(cfg)
    assert result.steps == 2 and result.train_loss is not None and math.isfinite(result.train_loss)
    entry = next(t for t in evaluate(cfg, progress=False).data["tasks"] if t["name"] == "necessity")
    assert set(entry["scores"]["cr-prefix_tuning"]) == {"f1", "precision", "recall", "accuracy", "auc"}


# ---- the recipe and the shared CodeReviewer samples (optional) ------------------------------------------


def test_recipe_starts_with_its_command_and_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = RECIPE.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# tuneforge data prepare REPO --config examples/recipes/code_review.yaml")
    data = _mined(tmp_path, "cr", "instruction")
    monkeypatch.chdir(ROOT)  # the recipe's paths are relative to the project root
    cfg = load_config(RECIPE, [f"data.dataset_dir={data}"])
    assert cfg.prepare.recipes == ["code_review"] and cfg.prepare.name == "cr" and cfg.method.name == "lora"
    assert [d.name for d in cfg.data.datasets] == ["cr_review_comment"]
    assert [(t.type, t.format) for t in cfg.eval.tasks] == [
        ("review_necessity", "codereviewer"),
        ("review_comment", "codereviewer"),
        ("review_comment", "codereviewer"),
        ("code_refinement", "codereviewer"),
    ]


def test_shared_codereviewer_samples_read_cleanly() -> None:
    cls, msg = SAMPLE / "cls-sample-100-seed42.nooldf.jsonl", SAMPLE / "msg-test-100.nooldf.jsonl"
    if not (cls.is_file() and msg.is_file()):
        pytest.skip("../shared/data/codereviewer_sample is not here")
    items = read_split("codereviewer", cls, "test")
    assert len(items) == 100 and sum(e.meta["y"] for e in items) == 45
    assert all(e.meta["patch"].startswith("@@ ") for e in items)
    _task("review_necessity", cls)
    assert len(read_split("codereviewer", msg, "test")) == 100
    _task("review_comment", msg)
    with pytest.raises(EvalError, match="an empty field 'msg'"):  # the y=0 items have no comment
        _task("review_comment", cls)
