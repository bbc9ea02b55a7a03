"""Golden tests of every evaluation metric on hand-computed examples, and of the bootstrap."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest

from tuneforge.config import GenerationMetric, TaskFormat, TaskType
from tuneforge.data.toolcalls import ToolCall, parse_calls
from tuneforge.eval import READERS, TASK_TYPES
from tuneforge.eval import metrics as m
from tuneforge.eval.stats import bootstrap, mean_interval, paired_bootstrap, resample_indices
from tuneforge.eval.toolcall import calls_match, names_match


def test_config_names_match_the_tables() -> None:
    assert set(typing.get_args(TaskType)) == set(TASK_TYPES)
    assert set(typing.get_args(TaskFormat)) == set(READERS)
    assert set(typing.get_args(GenerationMetric)) == set(m.GENERATION_METRICS)


def test_exact_match_normalises_case_punctuation_articles() -> None:
    assert m.exact_match("The Cat!", "cat") == 1.0
    assert m.exact_match("a dog", "the cat") == 0.0
    assert m.exact_match("2021-03-14", "2021-03-14") == 1.0
    assert m.exact_match("2021-03-15", "2021-03-14") == 0.0


def test_token_f1_by_hand() -> None:
    # pred tokens [cat, sat, down], ref [cat, sat, on, mat]: 2 shared -> P 2/3, R 1/2 -> F1 4/7
    assert m.token_f1("cat sat down", "the cat sat on the mat") == pytest.approx(4 / 7)
    assert m.token_f1("dog", "cat") == 0.0
    assert m.token_f1("", "") == 1.0
    # multiplicity counts: pred [x, x], ref [x]: 1 shared -> P 1/2, R 1 -> 2/3
    assert m.token_f1("x x", "x") == pytest.approx(2 / 3)


def test_bleu_by_hand_and_equal_to_sacrebleu_corpus() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": 1-gram 5/6, 2-gram 3/5, 3-gram 1/4,
    # 4-gram 0/3 -> exp smoothing gives 1/(2*3); equal lengths, no brevity penalty.
    rows = m.bleu_rows(["the cat sat on the mat"], ["the cat is on the mat"])
    by_hand = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert rows.value() == pytest.approx(by_hand, abs=1e-6)
    assert m.bleu_rows(["a b c d e"], ["a b c d e"]).value() == pytest.approx(100.0)

    import sacrebleu

    hyps = ["the cat sat on the mat", "hello there general kenobi", "one two three"]
    refs = ["the cat is on the mat", "hello there general", "one two three four five"]
    assert m.bleu_rows(hyps, refs).value() == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)


def test_rouge_by_hand() -> None:
    r = m.rouge_rows(["the cat sat"], ["the cat sat on the mat"])
    assert r["rouge1"].value() == pytest.approx(2 / 3)  # P 3/3, R 3/6
    assert r["rouge2"].value() == pytest.approx(4 / 7)  # P 2/2, R 2/5
    assert r["rougeL"].value() == pytest.approx(2 / 3)  # LCS 3


def test_chinese_path_segments_with_jieba() -> None:
    assert m.tokens("我爱北京天安门", "zh") == ["我", "爱", "北京", "天安门"]
    # pred 4 words, ref [我, 爱, 北京]: P 3/4, R 1 -> 6/7; the default (ASCII) tokenizer would see nothing
    r = m.rouge_rows(["我爱北京天安门"], ["我爱北京"], "zh")
    assert r["rouge1"].value() == pytest.approx(6 / 7)
    assert m.rouge_rows(["我爱北京天安门"], ["我爱北京"], "en")["rouge1"].value() == 0.0
    assert m.token_f1("我爱北京天安门", "我爱北京", "zh") == pytest.approx(6 / 7)
    assert m.exact_match("北京。", "北京", "zh") == 1.0
    assert m.bleu_rows(["我爱北京天安门"], ["我爱北京天安门"], "zh").value() == pytest.approx(100.0)


def test_macro_f1_by_hand() -> None:
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 1, fn 1 -> 1/2; an invalid prediction (-1) is wrong
    assert m.macro_f1([0, 1, 1, -1], [0, 1, 0, 1], 2) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m.macro_f1([0, 1, 2], [0, 1, 2], 3) == 1.0


def test_auc_by_hand() -> None:
    # positive/negative pairs: (0.9>0.8) (0.9>0.1) (0.3<0.8) (0.3>0.1) -> 3 of 4
    assert m.roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert m.roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # a tie counts half
    assert m.roc_auc([0.2, 0.4, 0.4, 0.9], [0, 1, 0, 1]) == pytest.approx(0.875)  # 1 + 0.5 + 1 + 1 over 4
    assert math.isnan(m.roc_auc([0.1, 0.2], [1, 1]))


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("3 + 4 = 7. The answer is 7.", 7.0),
        ("Janet makes 9 * 2 = 18 dollars.\n#### 18", 18.0),
        ("#### 1,234", 1234.0),
        ("so she has 12 apples left", 12.0),
        ("It costs $3.50 in total.", 3.5),
        ("The answer is -5, not 6.", -5.0),
        ("The answer is 3/4", 0.75),
        ("no number here", None),
    ],
)
def test_math_answer_extraction(text: str, number: float | None) -> None:
    assert m.extract_answer(text) == number


def test_same_number_tolerance() -> None:
    assert m.same_number(8.0, 8.0) and m.same_number(0.6000001, 0.6)
    assert not m.same_number(9.0, 8.0) and not m.same_number(None, 8.0)


# --- tool calls --------------------------------------------------------------------------------------


def parse_tool_calls(text: str) -> list[ToolCall]:
    return parse_calls(text)[1]


TRIANGLE = [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]


@pytest.mark.parametrize(
    "text",
    [
        "[calculate_triangle_area(base=10, height=5)]",
        'calculate_triangle_area(base=10, height=5, unit="Units")',
        '{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5.0}}',
        'Sure: [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}]',
        '<tool_call>\n{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}\n</tool_call>',
        '{"type": "function", "function": {"name": "calculate_triangle_area", "arguments": "{\\"base\\": 10, '
        '\\"height\\": 5}"}}',
        '```json\n{"calculate_triangle_area": {"base": 10, "height": 5}}\n```',
    ],
)
def test_tool_call_formats_parse_and_match(text: str) -> None:
    assert calls_match(parse_tool_calls(text), TRIANGLE), text


@pytest.mark.parametrize(
    "text",
    [
        "calculate_triangle_area(base=10)",  # a required argument missing
        "calculate_triangle_area(base=10, height=6)",  # a wrong value
        "calculate_triangle_area(base=10, height=5, colour='red')",  # an argument the reference does not know
        "area(base=10, height=5)",  # the wrong function
        "The area is 25 square units.",  # no call at all
        "[calculate_triangle_area(base=10, height=5), calculate_triangle_area(base=10, height=5)]",  # one too many
    ],
)
def test_tool_call_mismatches(text: str) -> None:
    assert not calls_match(parse_tool_calls(text), TRIANGLE), text


def test_tool_call_details() -> None:
    assert parse_tool_calls("I cannot help with that.") == []
    assert calls_match([], [])  # irrelevance: no call is right
    assert not calls_match([ToolCall("f", {})], [])
    # parallel calls in any order; dotted names may come back with underscores; strings normalised
    expected = [{"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
                {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}}]  # fmt: skip
    got = parse_tool_calls(
        "[spotify_play(artist='maroon 5', duration=15), spotify.play(artist='Taylor Swift', duration=20)]"
    )
    assert calls_match(got, expected)
    assert names_match(parse_tool_calls("spotify.play(artist='x')"), expected[:1])
    assert not calls_match(parse_tool_calls("f(x=True)"), [{"f": {"x": [1]}}])  # a bool is not a number
    assert calls_match(parse_tool_calls("f(xs=[1, 2])"), [{"f": {"xs": [[1, 2]]}}])
    assert not calls_match(parse_tool_calls("f(xs=[2, 1])"), [{"f": {"xs": [[1, 2]]}}])


# --- bootstrap ---------------------------------------------------------------------------------------


def test_paired_bootstrap_properties() -> None:
    idx = resample_indices(50, 400, seed=1)
    a = m.mean_rows([float(i % 2) for i in range(50)])
    same = paired_bootstrap(a, a, idx)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    better = m.mean_rows([1.0] * 50)
    d = paired_bootstrap(a, better, idx)
    assert d.value == pytest.approx(0.5) and d.low < 0.5 < d.high and d.low > 0.2
    # same seed, same resamples, same interval; another seed, another interval
    again = paired_bootstrap(a, better, resample_indices(50, 400, seed=1))
    assert np.array_equal(again.replicates, d.replicates) and (again.low, again.high) == (d.low, d.high)
    assert not np.array_equal(paired_bootstrap(a, better, resample_indices(50, 400, seed=2)).replicates, d.replicates)


def test_bootstrap_generic_reduce_equals_vectorised_mean() -> None:
    values = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    idx = resample_indices(len(values), 200, seed=3)
    fast = bootstrap(m.mean_rows(values), idx)
    slow = bootstrap(m.MetricRows(np.asarray(values).reshape(-1, 1), lambda r: float(r[:, 0].mean())), idx)
    assert np.allclose(fast.replicates, slow.replicates) and fast.low == slow.low
    both = mean_interval([fast, slow])
    assert both.value == pytest.approx(fast.value)


def test_bootstrap_of_corpus_metrics_recomputes_them() -> None:
    rows = m.bleu_rows(["a b c d", "x y z w"], ["a b c d", "p q r s"])
    iv = bootstrap(rows, resample_indices(2, 100, seed=0))
    assert iv.low == pytest.approx(0.0, abs=1e-6) and iv.high == pytest.approx(100.0)
