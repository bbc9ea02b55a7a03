"""The poetry recipe (docs/recipes/poetry.md): the chinese-poetry reader (lines, forms, bad records naming file,
row and field), the held-out split `tuneforge data poetry` writes, and the recipe files. The metrics are in
test_recipe_poetry_metrics.py, the tiny-model runs in test_recipe_poetry_runs.py."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA
from tuneforge.cli import main
from tuneforge.data.poetry import FORMS, clean_line, infer_form, poem_of, prompt, read_poems, split_lines
from tuneforge.data.poetry_prepare import draw_titles, prepare_poetry, split_poems
from tuneforge.data.schema import DataError
from tuneforge.eval import EvalError, read_split

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "src" / "tuneforge" / "examples" / "recipes"
POETRY = SHARED_DATA / "poetry"
JINGYESI = ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"]  # 静夜思, 李白 (the common version)
CHUNXIAO = ["春眠不觉晓，处处闻啼鸟。", "夜来风雨声，花落知多少。"]  # 春晓, 孟浩然
HAN = "天地日月山水风云花草春秋江河人心长远清明高深白青红黄东西南北来去归飞"


def shi(title: str, paragraphs: list[str], **extra: Any) -> dict[str, Any]:
    return {"author": "某", "title": title, "paragraphs": paragraphs, **extra}


def line(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(HAN, k=n))


def regular(rng: random.Random, title: str, n_lines: int, chars: int) -> dict[str, Any]:
    lines = [line(rng, chars) for _ in range(n_lines)]
    return shi(title, [f"{a}，{b}。" for a, b in zip(lines[::2], lines[1::2], strict=True)])


def corpus(folder: Path, n: int = 40, seed: int = 0) -> Path:
    """A small chinese-poetry folder: shi of the four regular forms and of none, in two files; ci in a subfolder."""
    rng = random.Random(seed)
    shapes = [(4, 5), (4, 7), (8, 5), (8, 7)]
    poems = [regular(rng, f"题{i}", *shapes[i % 4]) for i in range(n)]
    poems += [shi(f"古{i}", [f"{line(rng, 5)}，{line(rng, 6)}。"] * 3) for i in range(4)]  # no regular form
    (folder / "tang").mkdir(parents=True)
    (folder / "tang" / "a.json").write_text(json.dumps(poems[: n // 2], ensure_ascii=False), encoding="utf-8")
    (folder / "tang" / "b.json").write_text(json.dumps(poems[n // 2 :], ensure_ascii=False), encoding="utf-8")
    ci = [{"author": "某", "rhythmic": "浣溪沙", "paragraphs": [f"{line(rng, 7)}。{line(rng, 7)}。"]} for _ in range(3)]
    (folder / "ci").mkdir()
    (folder / "ci" / "ci.json").write_text(json.dumps(ci, ensure_ascii=False), encoding="utf-8")
    return folder


# ---- lines and forms -----------------------------------------------------------------------------------


def test_lines_split_on_chinese_and_ascii_marks_and_count_characters() -> None:
    assert split_lines("\n".join(JINGYESI)) == ["床前明月光", "疑是地上霜", "举头望明月", "低头思故乡"]
    assert split_lines("春眠不觉晓,处处闻啼鸟.\n夜来风雨声;花落知多少!") == [
        "春眠不觉晓",
        "处处闻啼鸟",
        "夜来风雨声",
        "花落知多少",
    ]
    assert split_lines("胡兒能唱《琵琶篇》、童子解吟") == ["胡兒能唱琵琶篇", "童子解吟"]  # 、 ends a line; 《》 dropped
    assert clean_line("[爽]節在重九") == "爽節在重九"  # an uncertain reading is its character
    assert len(clean_line("妖韶援綠{𥫗/戢}")) == 5  # a character written by its parts is one
    assert len(clean_line("冰□已鏤津")) == 5  # a lost character still fills its place
    assert split_lines("，。\n \n") == []


@pytest.mark.parametrize(
    ("shape", "form"),
    [
        ((4, 5), "五言绝句"),
        ((4, 7), "七言绝句"),
        ((8, 5), "五言律诗"),
        ((8, 7), "七言律诗"),
        ((6, 5), None),
        ((4, 4), None),
    ],
)
def test_forms_by_line_count_and_length(shape: tuple[int, int], form: str | None) -> None:
    assert infer_form(["一" * shape[1]] * shape[0]) == form
    assert infer_form(["一" * 5] * 3 + ["一" * 7]) is None  # mixed lengths: no regular form


def test_the_tag_names_the_form_when_the_lines_fit_it() -> None:
    assert poem_of(shi("靜夜思", JINGYESI, tags=["唐诗三百首", "五言绝句"])).form == "五言绝句"
    assert poem_of(shi("x", JINGYESI, tags=["五言古诗"])).form == "五言古诗"  # a non-regular form, as tagged
    assert poem_of(shi("x", JINGYESI)).form == "五言绝句"  # untagged: read from the lines
    # 唐诗三百首 tags 無題二首 一 七言律诗, but the file holds 6 of its lines: no form, rather than a wrong one
    six = shi("無題", ["鳳尾香羅薄幾重，碧文圓頂夜深縫。"] * 3, tags=["七言律诗"])
    assert poem_of(six).form is None
    ci = poem_of({"author": "晏殊", "rhythmic": "浣溪沙", "paragraphs": ["一曲新詞酒一杯。"]})
    assert (ci.kind, ci.title, ci.form) == ("ci", "浣溪沙", None)


def test_prompt_names_the_title_and_the_form() -> None:
    assert prompt("春曉", "五言绝句") == "以《春曉》为题，写一首五言绝句。"
    assert prompt("雜詩", None) == "以《雜詩》为题，写一首诗。"
    assert prompt("浣溪沙", None, "ci") == "按词牌《浣溪沙》填一首词。"


# ---- bad records ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"author": "a", "paragraphs": ["x。"]},
            r"row 2: missing field 'title' \(shi\) or 'rhythmic' \(ci\); .*'author'",
        ),
        ({"title": "t", "paragraphs": ["x。"]}, r"row 2: missing field 'author'"),
        ({"title": "t", "author": "a"}, r"row 2: missing field 'paragraphs'"),
        (shi("t", "床前明月光"), r"row 2: field 'paragraphs' must be a non-empty list of lines, got '床前"),  # type: ignore[arg-type]
        (shi("t", []), r"row 2: field 'paragraphs' must be a non-empty list"),
        (shi("t", ["床前明月光，", 7]), r"row 2: field 'paragraphs' item 1 must be text, got int"),
        (shi("t", ["，。"]), r"row 2: field 'paragraphs' holds no line of text"),
        (shi("", JINGYESI), r"row 2: field 'title' must be non-empty text"),
        ({**shi("t", JINGYESI), "author": None}, r"row 2: field 'author' must be non-empty text, got None"),
        (shi("t", JINGYESI, tags="五言绝句"), r"row 2: field 'tags' must be a list of text"),
        ("床前明月光", r"row 2: expected an object with named fields"),
    ],
)
def test_a_bad_record_names_file_row_and_field(tmp_path: Path, record: Any, message: str) -> None:
    path = tmp_path / "poet.tang.0.json"
    path.write_text(json.dumps([shi("靜夜思", JINGYESI), record], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:{message}"):
        read_poems(path)
    with pytest.raises(EvalError, match=rf"{path}:{message}"):  # the eval reader says the same
        read_split("poetry", path, "test")


def test_files_that_are_not_poems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no \.json poem files"):
        read_poems(tmp_path / "empty")
    (tmp_path / "poems.txt").write_text("床前明月光\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"poems\.txt: poems are read from the chinese-poetry \.json files"):
        read_poems(tmp_path / "poems.txt")
    (tmp_path / "broken.json").write_text('[{"title": ', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json:1: not valid JSON"):
        read_poems(tmp_path / "broken.json")


def test_eval_reader_keeps_one_item_per_title_and_regular_form(tmp_path: Path) -> None:
    poems = [
        shi("靜夜思", JINGYESI, tags=["五言绝句"]),
        shi("靜夜思", JINGYESI),  # the same title and form again: the same prompt, one item
        shi("春曉", CHUNXIAO),
        shi("古意", ["一二三四五六，七八九十。"] * 2),  # irregular: not an item
    ]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(poems, ensure_ascii=False), encoding="utf-8")
    items = read_split("poetry", path, "test")
    assert [(e.question, e.target, e.meta["title"]) for e in items] == [
        ("以《靜夜思》为题，写一首五言绝句。", "五言绝句", "靜夜思"),
        ("以《春曉》为题，写一首五言绝句。", "五言绝句", "春曉"),
    ]
    assert items[0].reference == "\n".join(JINGYESI)
    path.write_text(json.dumps([poems[3]], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(EvalError, match=r"holds no poem of a regular form \(五言绝句, 七言绝句, 五言律诗, 七言律诗\)"):
        read_split("poetry", path, "test")


# ---- the held-out split and the prepared files ---------------------------------------------------------


def test_held_out_poems_and_their_lines_never_reach_training() -> None:
    poems = [poem_of(shi("靜夜思", JINGYESI)), poem_of(shi("春曉", CHUNXIAO))]
    variant = poem_of(shi("夜思", ["床前看月光，疑是地上霜。", "舉頭望山月，低頭思故鄉。"]))  # shares 疑是地上霜
    again = poem_of(shi("春曉", CHUNXIAO))
    ci = poem_of({"author": "a", "rhythmic": "靜夜思", "paragraphs": ["一曲新詞酒一杯。"]})  # a tune, not a title
    train, held, counts = split_poems([*poems, variant, again, ci], ["靜夜思"])
    assert [p.title for p in held] == ["靜夜思"]
    assert [(p.title, p.kind) for p in train] == [("春曉", "shi"), ("靜夜思", "ci")]
    assert counts == {"shares_a_held_out_line": 1, "duplicates": 1}


def test_titles_are_a_seeded_draw_of_regular_form_titles() -> None:
    poems = [poem_of(shi(f"t{i}", JINGYESI)) for i in range(30)] + [poem_of(shi("古", ["一二三四五六，七八。"]))]
    a, b = draw_titles(poems, 5, seed=0), draw_titles(poems, 5, seed=1)
    assert a == draw_titles(poems, 5, seed=0) and a != b and len(a) == 5 and "古" not in a
    with pytest.raises(DataError, match=r"30 titles of a regular form; hold out fewer \(--n\)"):
        draw_titles(poems, 30, seed=0)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_writes_training_files_without_the_held_out_titles(tmp_path: Path) -> None:
    src = corpus(tmp_path / "poetry")
    out = tmp_path / "data" / "poetry"
    summary = prepare_poetry([src], out, held_out=6, seed=3)
    assert sorted(p.name for p in out.iterdir()) == ["corpus.txt", "pt.jsonl", "sft.jsonl", "split.json", "test.json"]
    assert json.loads((out / "split.json").read_text(encoding="utf-8")) == summary
    held = set(summary["held_out_titles"])
    assert len(held) == 6 and summary["poems_read"] == 47 and summary["train_poems"] == 41
    pt, sft = _jsonl(out / "pt.jsonl"), _jsonl(out / "sft.jsonl")
    corpus_lines = (out / "corpus.txt").read_text(encoding="utf-8").splitlines()
    assert len(pt) == len(sft) == len(corpus_lines) == 41
    tests = json.loads((out / "test.json").read_text(encoding="utf-8"))
    test_lines = {x for t in tests for x in split_lines("\n".join(t["paragraphs"]))}
    for text in [r["text"] for r in pt] + [r["instruction"] + r["output"] for r in sft] + corpus_lines:
        assert not any(f"《{t}》" in text or text.startswith(f"{t}\n") or text.startswith(f"{t} ") for t in held)
        assert not test_lines & set(split_lines(text))
    assert sorted(t["title"] for t in tests) == sorted(held)  # each held-out title: one regular-form item
    assert all(any(tag in FORMS for tag in t["tags"]) for t in tests)  # the form is a tag the reader reads
    assert [e.target for e in read_split("poetry", out / "test.json", "test")] == [
        next(tag for tag in t["tags"] if tag in FORMS) for t in tests
    ]
    first = next(r for r in sft if "浣溪沙" not in r["instruction"] and "古" not in r["instruction"])
    assert first["instruction"].endswith(("五言绝句。", "七言绝句。", "五言律诗。", "七言律诗。"))
    assert any(r["instruction"] == "按词牌《浣溪沙》填一首词。" for r in sft)
    assert set(summary["sources"]) == {str(f) for f in sorted(src.rglob("*.json"))}


def test_prepare_never_overwrites_a_data_folder(tmp_path: Path) -> None:
    src = corpus(tmp_path / "poetry")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(DataError, match=r"out already exists and is not empty: a poetry data folder is never overwr"):
        prepare_poetry([src], out, held_out=4)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_poetry([src], empty, held_out=4)  # an empty folder is filled
    assert (empty / "test.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    with pytest.raises(DataError, match=r"--n must be at least 1"):
        prepare_poetry([src], tmp_path / "new", held_out=0)


def test_data_poetry_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = corpus(tmp_path / "poetry")
    out = tmp_path / "d"
    assert main(["data", "poetry", str(src), "--out", str(out), "--n", "5", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert "held out: 5 titles (seed 7)" in printed and f"written to {out}" in printed
    assert json.loads((out / "split.json").read_text(encoding="utf-8"))["seed"] == 7
    assert main(["data", "poetry", str(src), "--out", str(out)]) == 2  # refused: exists
    assert "never overwritten" in capsys.readouterr().err
    assert main(["data", "poetry", "--out", str(tmp_path / "x")]) == 2
    assert "needs the chinese-poetry files or folders" in capsys.readouterr().err


# ---- the recipe files and the shared data (optional) ---------------------------------------------------


def test_recipes_start_with_their_command() -> None:
    firsts = {p.name: p.read_text(encoding="utf-8").splitlines()[0] for p in RECIPES.glob("poetry*.yaml")}
    assert sorted(firsts) == ["poetry_eval.yaml", "poetry_pt.yaml", "poetry_pt_vocab.yaml", "poetry_sft.yaml"]
    assert firsts["poetry_pt.yaml"].startswith("# tuneforge data poetry ../shared/data/poetry --out data/poetry && ")
    for name, first in firsts.items():
        assert first.startswith("# tuneforge ") and f"recipes/{name}" in first


def test_recipes_validate_on_prepared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneforge.cli import load_config

    prepare_poetry([corpus(tmp_path / "poetry")], tmp_path / "data" / "poetry", held_out=4)
    monkeypatch.chdir(tmp_path)  # the recipes' paths are relative to the project root
    names = ("poetry_pt", "poetry_pt_vocab", "poetry_sft", "poetry_eval")
    pt, vocab, sft, ev = (load_config(RECIPES / f"{n}.yaml", []) for n in names)
    assert (pt.stage, pt.data.datasets[0].format, pt.vocab.corpus) == ("pt", "text", None)
    assert (vocab.stage, vocab.vocab.corpus, vocab.vocab.new_tokens) == ("pt", "data/poetry/corpus.txt", 1000)
    assert (sft.stage, sft.model.adapter, sft.data.datasets[0].format) == ("sft", "runs/poetry-pt", "alpaca")
    assert not sft.eval.tasks and "model" not in ev.model_fields_set  # eval's base: the one poetry-pt trained from
    (task,) = ev.eval.tasks
    assert (task.type, task.format, task.path) == ("poetry", "poetry", "data/poetry/test.json")
    assert ev.eval.runs == ["runs/poetry-pt", "runs/poetry-pt-vocab", "runs/poetry-sft", "runs/poetry-sft-vocab"]


def test_shared_poetry_reads_cleanly() -> None:
    if not (POETRY / "全唐诗" / "唐诗三百首.json").is_file():
        pytest.skip("../shared/data/poetry is not here")
    poems = read_poems(POETRY)
    assert len(poems) == 4648 and sum(p.kind == "ci" for p in poems) == 1280
    three_hundred = read_poems(POETRY / "全唐诗" / "唐诗三百首.json")
    jingyesi = next(p for p in three_hundred if p.title == "靜夜思")
    assert (jingyesi.author, jingyesi.form, jingyesi.lines[1]) == ("李白", "五言绝句", "疑是地上霜")
    tagged = [p for p in three_hundred if any(t in FORMS for t in p.tags)]
    assert len(tagged) == 219 and sum(p.form is None for p in tagged) == 1  # 無題二首 一: 6 lines tagged 七言律诗
