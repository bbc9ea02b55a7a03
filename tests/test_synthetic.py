from __future__ import annotations

import json

from tuneforge.data.synthetic.generate import HERE, build_all, render


def test_shipped_files_match_the_generator() -> None:
    for name, obj in build_all().items():
        assert (HERE / name).read_text(encoding="utf-8") == render(obj), f"regenerate {name}"


def test_test_dates_never_trained_on() -> None:
    train = {r["output"] for r in json.loads((HERE / "iso_dates.json").read_text())}
    test = {r["output"] for r in json.loads((HERE / "iso_dates_test.json").read_text())}
    assert train and test and not train & test


def test_identity_test_questions_are_held_out() -> None:
    train = {r["instruction"] for r in json.loads((HERE / "identity.json").read_text())}
    test = {r["instruction"] for r in json.loads((HERE / "identity_test.json").read_text())}
    assert not train & test
    assert all("{{name}}" in r["output"] for r in json.loads((HERE / "identity.json").read_text()))


def test_hard_dates_are_held_out_and_say_what_they_mean() -> None:
    import datetime
    import re

    from tuneforge.data.synthetic.hard_dates import WEEKDAYS, ordinal_word

    assert [ordinal_word(d) for d in (1, 12, 20, 21, 30, 31)] == [
        "first", "twelfth", "twentieth", "twenty-first", "thirtieth", "thirty-first"
    ]  # fmt: skip
    load = lambda name: json.loads((HERE / name).read_text())  # noqa: E731
    test = load("iso_dates_hard_test.json")
    trained = {r["output"] for name in ("iso_dates.json", "iso_dates_hard.json") for r in load(name)}
    assert len(test) == 200 and not trained & {r["output"] for r in test}
    for row in test:
        y, m, d = map(int, row["output"].split("-"))
        text = row["instruction"]
        assert str(y) in text, text
        weekday = re.search("|".join(WEEKDAYS), text)
        if weekday:  # a stated weekday is the true one
            assert weekday.group(0) == WEEKDAYS[datetime.date(y, m, d).weekday()], text
        if "(day.month.year)" in text:
            assert f"{d:02d}.{m:02d}.{y}" in text, text
