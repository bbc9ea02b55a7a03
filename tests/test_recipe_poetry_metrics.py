"""The poetry task's metrics by hand: form, rhyme (十三辙 groups and strict finals, traditional characters, the
readings pypinyin lacks), repeated lines, distinct-2, on real poems and on broken ones; the task scoring known
responses; the error when pypinyin is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_recipe_poetry import CHUNXIAO, JINGYESI
from tuneforge.config import TaskSpec
from tuneforge.eval import EvalError
from tuneforge.eval.poetry_metrics import (
    GROUP_OF,
    RHYME_GROUPS,
    distinct_rows,
    finals,
    poetry_rows,
    ratio_rows,
    rhyme,
    score_poem,
)
from tuneforge.eval.prompts import Item
from tuneforge.eval.readers import Example
from tuneforge.eval.stats import bootstrap, resample_indices
from tuneforge.eval.tasks import Response, build_task

pytest.importorskip("pypinyin")

JINGYESI_TANG = ["牀前看月光，疑是地上霜。", "舉頭望山月，低頭思故鄉。"]  # 全唐诗's edition, traditional
SHANXING = ["遠上寒山石徑斜，白雲生處有人家。", "停車坐愛楓林晚，霜葉紅於二月花。"]  # 山行, 杜牧
# 春望, 杜甫: 五言律诗, even lines end 深 心 金 簪 (in, in, in, an: 簪 zan no longer rhymes in Mandarin)
CHUNWANG = [
    "國破山河在，城春草木深。",
    "感時花濺淚，恨別鳥驚心。",
    "烽火連三月，家書抵萬金。",
    "白頭搔更短，渾欲不勝簪。",
]


def text(paragraphs: list[str]) -> str:
    return "\n".join(paragraphs)


# ---- finals and the rhyme groups -----------------------------------------------------------------------


def test_finals_of_simplified_and_traditional_characters() -> None:
    assert finals("霜") == {"uang"} and finals("乡") == finals("鄉") == {"iang"}
    assert finals("鱼") == {"v"} and finals("有") >= {"iou"}  # strict finals: ü as v, you as iou
    assert finals("斜") >= {"ie", "ia"}  # every reading: xie and xia
    assert finals("𧹁") == frozenset() and finals("□") == frozenset()  # a character pypinyin cannot read, a lost one


def test_every_final_lies_in_one_group() -> None:
    listed = [f for group in RHYME_GROUPS.values() for f in group]
    assert len(listed) == len(set(listed)) == len(GROUP_OF)  # no final in two groups
    assert len(RHYME_GROUPS) == 13
    assert GROUP_OF["uang"] == GROUP_OF["iang"] == GROUP_OF["ang"] == "江阳"
    assert GROUP_OF["iao"] == GROUP_OF["ao"] == "遥条"
    assert GROUP_OF["en"] != GROUP_OF["ang"]


# ---- real poems ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("poem", "form", "ends", "grouped", "strict"),
    [
        (JINGYESI, "五言绝句", "霜乡", True, False),  # uang / iang: one 十三辙 group (江阳), two finals
        (JINGYESI_TANG, "五言绝句", "霜鄉", True, False),  # the same in traditional characters
        (CHUNXIAO, "五言绝句", "鸟少", True, False),  # iao / ao: 遥条
        (SHANXING, "七言绝句", "家花", True, False),  # jia / hua: 发花 (line 1's 斜 is an odd line, not checked)
        (CHUNWANG, "五言律诗", "心金簪", False, False),  # 深心金簪 rhymed in Tang; Mandarin 簪 zan has left
    ],
)
def test_real_poems(poem: list[str], form: str, ends: str, grouped: bool, strict: bool) -> None:
    s = score_poem(text(poem), form)
    assert (s["form"], s["line_count"], s["line_length"]) == (1.0, 1.0, 1.0)
    assert s["rhyme_ends"] == (ends if form.endswith("绝句") else "深" + ends)
    assert (s["rhyme"], s["rhyme_strict"], s["repeated_lines"]) == (grouped, strict, [])


def test_strict_rhyme_is_one_shared_final() -> None:
    assert rhyme(["春风", "明光", "秋月", "霜"], 4).strict  # 光 霜: uang
    assert not rhyme(["春风", "明光", "秋月", "乡"], 4).strict  # 光 乡: uang / iang
    assert rhyme(["一", "家", "二", "斜"], 4).strict  # 家 jia, 斜 xia: a shared reading


# ---- broken poems --------------------------------------------------------------------------------------


def test_wrong_line_count() -> None:
    three = score_poem("床前明月光，疑是地上霜。\n举头望明月。", "五言绝句")
    assert (three["form"], three["line_count"], three["line_length"]) == (0.0, 0.0, 1.0)
    assert not three["rhyme"]  # one even line shows no rhyme
    as_lushi = score_poem(text(JINGYESI), "五言律诗")  # a 绝句 where a 律诗 was asked for
    assert (as_lushi["form"], as_lushi["line_count"], as_lushi["line_length"]) == (0.0, 0.0, 1.0)
    assert as_lushi["rhyme"]  # its even lines still rhyme
    as_seven = score_poem(text(JINGYESI), "七言绝句")  # 5 characters where 7 were asked for
    assert (as_seven["form"], as_seven["line_count"], as_seven["line_length"]) == (0.0, 1.0, 0.0)


def test_a_line_of_the_wrong_length() -> None:
    s = score_poem("床前明月光，疑是地上白霜。\n举头望明月，低头思故乡。", "五言绝句")
    assert (s["form"], s["line_count"], s["line_length"]) == (0.0, 1.0, 0.75)


def test_a_repeated_line() -> None:
    s = score_poem("床前明月光，疑是地上霜。\n床前明月光，低头思故乡。", "五言绝句")
    assert s["repeated_lines"] == ["床前明月光"] and s["form"] == 1.0
    assert poetry_rows([s])["no_repeat"].value() == 0.0


def test_an_even_line_that_does_not_rhyme() -> None:
    s = score_poem("床前明月光，疑是地上霜。\n举头望明月，低头思故人。", "五言绝句")  # 人 ren: 人辰, not 江阳
    assert (s["form"], s["rhyme_ends"], s["rhyme"], s["rhyme_strict"]) == (1.0, "霜人", False, False)
    latin = score_poem("床前明月光，疑是地上霜。\n举头望明月，低头思故x。", "五言绝句")
    assert not latin["rhyme"] and latin["rhyme_unreadable"] == ""  # a Latin letter is read, and does not rhyme


def test_only_the_requested_lines_rhyme() -> None:
    # a 绝句 that goes on: lines 5-8 count against the form, not in the rhyme of lines 2 and 4
    s = score_poem(text(JINGYESI) + "\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。", "五言绝句")
    assert (s["line_count"], s["form"], s["rhyme_ends"], s["rhyme"]) == (0.0, 0.0, "霜乡", True)


def test_a_title_heading_is_not_a_line() -> None:
    s = score_poem("《靜夜思》\n" + text(JINGYESI_TANG), "五言绝句", "靜夜思")
    assert s["lines"][0] == "牀前看月光" and s["form"] == 1.0
    other = score_poem("《春曉》\n" + text(JINGYESI_TANG), "五言绝句", "靜夜思")  # not the requested title
    assert other["lines"][0] == "春曉" and other["form"] == 0.0


def test_empty_and_non_chinese_answers() -> None:
    for answer in ("", "Here is a poem about the moon."):
        s = score_poem(answer, "七言律诗")
        assert (s["form"], s["line_count"], s["rhyme"], s["rhyme_unreadable"]) == (0.0, 0.0, False, "")


# ---- the metric rows and their bootstrap ---------------------------------------------------------------


def test_an_unreadable_rhyme_character_counts_in_neither_part() -> None:
    good, bad = score_poem(text(JINGYESI), "五言绝句"), score_poem(text(CHUNWANG), "五言律诗")
    unread = score_poem("床前明月光，疑是地上𧹁。\n举头望明月，低头思故乡。", "五言绝句")
    assert unread["rhyme_unreadable"] == "𧹁" and not unread["rhyme"]
    rows = poetry_rows([good, bad, unread])
    assert rows["rhyme"].value() == pytest.approx(1 / 2)  # 1 of the 2 scorable poems
    assert rows["rhyme"].rows.tolist() == [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    assert np.isnan(ratio_rows([(0.0, 0.0)]).value())  # nothing scorable: no figure, not 0


def test_distinct_2_by_hand() -> None:
    # poem 0: 春风 风春 春风 (3 bigrams, 2 distinct); poem 1: 明月 (a line break is no bigram: 月|明 is not one)
    rows = distinct_rows([["春风", "风春", "春风"], ["明月"]])
    assert rows.value() == pytest.approx(3 / 4)
    assert rows.reduce(np.array([[0.0], [0.0]])) == pytest.approx(2 / 6)  # poem 0 drawn twice
    assert score_poem("春风春风。明月", "五言绝句")["bigrams"] == ["春风", "风春", "春风", "明月"]
    interval = bootstrap(rows, resample_indices(2, 200, 0))
    assert interval.low <= interval.value <= interval.high


def test_all_metrics_of_a_set_of_poems() -> None:
    scored = [
        score_poem(text(JINGYESI), "五言绝句"),
        score_poem(text(CHUNXIAO), "五言绝句"),
        score_poem("床前明月光，床前明月光。", "五言绝句"),  # 2 lines, one repeated
    ]
    got = {k: v.value() for k, v in poetry_rows(scored).items()}
    # 4 + 4 + 2 lines of 4 bigrams; distinct: 静夜思 has 明月 twice (15), 春晓 16, poem 3's are 静夜思's line 1
    bigrams, distinct = 16 + 16 + 8, 15 + 16
    assert got == pytest.approx(
        {
            "form": 2 / 3,
            "line_count": 2 / 3,
            "line_length": 1.0,
            "rhyme": 2 / 3,
            "rhyme_strict": 0.0,
            "no_repeat": 2 / 3,
            "distinct_2": distinct / bigrams,
        }
    )


# ---- the task ------------------------------------------------------------------------------------------


def _task(examples: list[Example]):  # type: ignore[no-untyped-def]
    return build_task(TaskSpec(type="poetry", format="poetry", path="test.json"), examples, "eval.tasks[0]")


def test_task_scores_known_responses() -> None:
    examples = [
        Example("0", "以《靜夜思》为题，写一首五言绝句。", "五言绝句", meta={"title": "靜夜思"}),
        Example("1", "以《春曉》为题，写一首五言律诗。", "五言律诗", meta={"title": "春曉"}),
    ]
    task = _task(examples)
    assert task.primary == "form" and task.max_new_tokens == 160
    answers = ["《靜夜思》\n" + text(JINGYESI_TANG), text(CHUNXIAO)]
    scores = task.score([Item(e) for e in examples], [Response(text=a) for a in answers])
    assert scores.metrics["form"].value() == 0.5 and scores.metrics["rhyme"].value() == 1.0
    first = scores.predictions[0]
    assert (first["title"], first["form"], first["form_ok"], first["text"]) == ("靜夜思", "五言绝句", 1.0, answers[0])
    assert (first["rhyme_ends"], first["rhyme"], first["rhyme_strict"]) == ("霜鄉", True, False)
    assert first["lines"] == ["牀前看月光", "疑是地上霜", "舉頭望山月", "低頭思故鄉"] and "bigrams" not in first
    assert scores.predictions[1]["line_count"] == 0.0


def test_task_refuses_an_unknown_form_and_settings_of_other_types() -> None:
    with pytest.raises(EvalError, match=r"eval\.tasks\[0\]: item 0 of test\.json: form '五言古诗' is not one of"):
        _task([Example("0", "q", "五言古诗")])
    with pytest.raises(EvalError, match=r"eval\.tasks\[0\]: labels does not apply to a poetry task"):
        build_task(TaskSpec(type="poetry", format="poetry", path="x", labels=["a"]), [], "eval.tasks[0]")
    with pytest.raises(EvalError, match=r"format='alpaca' cannot feed a poetry task; allowed: poetry"):
        build_task(TaskSpec(type="poetry", format="alpaca", path="x"), [], "eval.tasks[0]")


def test_without_pypinyin_the_task_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pypinyin", None)  # import pypinyin now raises ModuleNotFoundError
    with pytest.raises(EvalError, match=r"pypinyin, which is not installed: pip install 'tuneforge\[poetry\]'"):
        _task([Example("0", "q", "五言绝句")])
    with pytest.raises(EvalError, match=r"tuneforge\[poetry\]"):
        finals("霜")
