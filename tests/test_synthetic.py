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
