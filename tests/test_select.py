"""Private data selection (tuneforge.privacy.selection): a keyword embedder stands in for MiniLM, except in the
one slow test."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuneforge.cli import main
from tuneforge.config import DatasetSpec
from tuneforge.data.formats import format_record
from tuneforge.data.registry import resolve
from tuneforge.data.sources import read_records
from tuneforge.privacy import selection
from tuneforge.privacy.dp import EXTRA_ALPHAS
from tuneforge.privacy.selection import (
    SelectionError,
    SelectSettings,
    allocate,
    calibrate,
    gaussian_noise,
    private_counts,
    select_public,
)

TOPICS = ("date", "math", "cook")


class TopicEmbedder:
    """One axis per topic word in the text, plus a small hash-seeded jitter: topics are well apart."""

    name = "topic-test"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for row, text in enumerate(texts):
            for axis, topic in enumerate(TOPICS):
                out[row, axis] = float(topic in text)
            out[row, 3:] = np.frombuffer(hashlib.sha256(text.encode()).digest()[:5], np.uint8) / 2550.0
        return out


def write_json(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def alpaca(topic: str, i: int, secret: str = "") -> dict[str, Any]:
    return {"instruction": f"{topic} question {i} {secret}", "input": "", "output": f"{topic} answer {i}{secret}"}


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    return write_json(tmp_path / "pool.json", [alpaca(t, i) for t in TOPICS for i in range(30)])


@pytest.fixture
def private(tmp_path: Path) -> Path:
    return write_json(tmp_path / "private.json", [alpaca("date", i, f"SECRET-{i:03d}") for i in range(24)])


def run(
    private: Path | str, pool: Path | list[Any], out: Path, noise_rng: Any = None, **settings: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {"n": 20, "epsilon": 1.0, "clusters": 3}
    publics = pool if isinstance(pool, list) else [str(pool)]
    settings = SelectSettings(**{**base, **settings})
    return select_public(str(private), publics, out, settings, embedder=TopicEmbedder(), noise_rng=noise_rng)


def topic_counts(out: Path, name: str = "selected") -> dict[str, int]:
    counts = dict.fromkeys(TOPICS, 0)
    for _, record in read_records(out / f"{name}.jsonl"):
        counts[record["instruction"].split()[0]] += 1
    return counts


def test_selection_follows_the_private_distribution(tmp_path: Path, pool: Path, private: Path) -> None:
    exact = run(private, pool, tmp_path / "inf", epsilon=math.inf)
    assert topic_counts(tmp_path / "inf") == {"date": 20, "math": 0, "cook": 0}
    assert exact["noise_multiplier"] == 0 and not exact["private"] and exact["epsilon"] is None
    run(private, pool, tmp_path / "e8", epsilon=8.0, noise_rng=np.random.default_rng(0))
    assert topic_counts(tmp_path / "e8")["date"] >= 18  # sigma ~0.64 against 24 private dates


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # opacus PRV at sample rate 1: log(1 - q)
def test_noise_multiplier_and_epsilon_are_opacus_numbers(tmp_path: Path, pool: Path, private: Path) -> None:
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    alphas = [*RDPAccountant.DEFAULT_ALPHAS, *EXTRA_ALPHAS]
    s = run(private, pool, tmp_path / "out", epsilon=1.0, delta=1e-5)
    sigma = get_noise_multiplier(
        target_epsilon=1.0, target_delta=1e-5, sample_rate=1.0, steps=1, accountant="rdp", alphas=alphas
    )
    rdp, prv = RDPAccountant(), PRVAccountant()
    rdp.history = prv.history = [(sigma, 1.0, 1)]
    assert s["noise_multiplier"] == pytest.approx(sigma)
    assert s["epsilon_rdp"] == pytest.approx(rdp.get_epsilon(1e-5, alphas=alphas)) and s["epsilon_rdp"] <= 1.0
    assert s["epsilon_prv"] == pytest.approx(prv.get_epsilon(1e-5), abs=1e-6) and s["epsilon_prv"] < s["epsilon_rdp"]
    # the Gaussian mechanism at (1, 1e-5) needs sigma ~3.73 (Balle & Wang's analytic bound); RDP is looser
    assert 3.7 < sigma < 4.3
    sigma_prv, _, eps_prv = calibrate(1.0, 1e-5, "prv")
    assert sigma_prv < sigma and eps_prv <= 1.0 + 0.01


def test_noise_has_the_calibrated_spread() -> None:
    noise = gaussian_noise(4.0, 200_000, np.random.default_rng(1))
    assert abs(noise.mean()) < 0.05 and noise.std() == pytest.approx(4.0, rel=0.01)
    assert not gaussian_noise(0.0, 3, np.random.default_rng(1)).any()


def test_release_is_the_counts_plus_noise_of_the_calibrated_std(tmp_path: Path, pool: Path, private: Path) -> None:
    s = run(private, pool, tmp_path / "out", epsilon=2.0, noise_rng=np.random.default_rng(7))
    date_cluster = next(r["cluster"] for r in s["rows"] if int(r["source"].rsplit(" ", 1)[1]) <= 30)  # rows 1-30
    exact = np.zeros(3)
    exact[date_cluster] = 24  # all 24 private samples are dates
    noise = gaussian_noise(s["noise_multiplier"] * s["sensitivity"], 3, np.random.default_rng(7))
    assert s["noise_multiplier"] == pytest.approx(calibrate(2.0, 1e-5, "rdp")[0])
    assert s["histogram"]["private_noised"] == pytest.approx((exact + noise).tolist(), abs=1e-4)


def test_no_private_text_or_raw_histogram_is_written(tmp_path: Path, pool: Path, private: Path) -> None:
    out = tmp_path / "out"
    s = run(private, pool, out, epsilon=1.0)
    written = b"".join(p.read_bytes() for p in out.iterdir())
    assert b"SECRET" not in written
    assert {p.name for p in out.iterdir()} == {"selected.jsonl", "dataset_info.json", "selection.json", "selection.png"}
    assert s["histogram"]["private_noised"] != s["histogram"]["selected"]
    raw = json.loads((out / "selection.json").read_text())
    exact = sorted([24.0, 0.0, 0.0])
    assert sorted(raw["histogram"]["private_noised"]) != exact and "private_size" not in raw
    assert str(private) not in json.dumps(raw["rows"])  # only public rows are named


def test_output_layout_is_the_public_pools(tmp_path: Path, private: Path) -> None:
    turns = [
        {"role": "asker", "text": "cook question"},
        {"role": "helper", "text": "cook answer"},
    ]
    rows = [{"dialog": [{**t, "text": f"{t['text']} {i}"} for t in turns], "id": i} for i in range(12)]
    rows += [{"dialog": [{**t, "text": f"date {t['text'][5:]} {i}"} for t in turns], "id": 100 + i} for i in range(12)]
    reg = tmp_path / "reg"
    reg.mkdir()
    write_json(reg / "chats.json", rows)
    entry = {
        "file_name": "chats.json",
        "formatting": "sharegpt",
        "columns": {"messages": "dialog"},
        "tags": {"role_tag": "role", "content_tag": "text", "user_tag": "asker", "assistant_tag": "helper"},
    }
    (reg / "dataset_info.json").write_text(json.dumps({"chats": entry}))
    out = tmp_path / "out"
    s = select_public(
        str(private),
        ["chats"],
        out,
        SelectSettings(n=8, epsilon=math.inf, clusters=2, name="picked"),
        dataset_dir=str(reg),
        embedder=TopicEmbedder(),
    )
    public = resolve(DatasetSpec(name="chats"), str(reg))
    mine = resolve(DatasetSpec(name="picked"), str(out))
    assert mine.format == "sharegpt" and mine.format_spec == public.format_spec
    written = [r for _, r in read_records(out / "picked.jsonl")]
    assert len(written) == 8 and all(r in rows for r in written) and all(r["id"] >= 100 for r in written)
    originals = {r["id"]: r for r in rows}
    for src, r in read_records(out / "picked.jsonl"):
        ours, theirs = (
            format_record(mine.format, r, mine.format_spec, src),
            format_record("sharegpt", originals[r["id"]], public.format_spec, src),
        )
        assert ours == theirs
    assert [row["dataset"] for row in s["rows"]] == ["picked"] * 8


def test_two_public_layouts_give_two_datasets(tmp_path: Path, pool: Path, private: Path) -> None:
    texts = tmp_path / "notes.txt"
    texts.write_text("".join(f"date note {i}\n" for i in range(10)) + "".join(f"math note {i}\n" for i in range(10)))
    out = tmp_path / "out"
    s = run(private, [str(pool), str(texts)], out, n=30, epsilon=math.inf)
    assert set(s["datasets"]) == {"selected_1", "selected_2"}
    assert resolve(DatasetSpec(name="selected_2"), str(out)).format == "text"
    assert s["datasets"]["selected_1"]["rows"] + s["datasets"]["selected_2"]["rows"] == 30
    assert all("date" in r["text"] for _, r in read_records(out / "selected_2.jsonl"))


def test_user_column_counts_each_user_once() -> None:
    labels = np.array([0, 0, 0, 0, 1, 2])
    counts = private_counts(labels, 3, ["ann", "ann", "ann", "ann", "bob", "cy"])
    assert counts.tolist() == [1.0, 1.0, 1.0]
    assert private_counts(labels, 4).tolist() == [4.0, 1.0, 1.0, 0.0]
    two_clusters = private_counts(np.array([0, 1]), 2, ["ann", "ann"])
    assert two_clusters.tolist() == [0.5, 0.5] and np.linalg.norm(two_clusters) <= 1.0


def test_user_column_in_a_selection(tmp_path: Path, pool: Path) -> None:
    rows = [{**alpaca("date", i), "user": f"u{i % 3}"} for i in range(9)]
    priv = write_json(tmp_path / "users.json", rows)
    s = run(priv, pool, tmp_path / "out", epsilon=math.inf, user_column="user")
    assert "user ('user')" in s["privacy_unit"] or "column 'user'" in s["privacy_unit"]
    with pytest.raises(SelectionError, match=r"users\.json:row 1: no user column 'owner'"):
        run(priv, pool, tmp_path / "out2", user_column="owner")


def test_allocation_is_proportional_and_capped() -> None:
    assert allocate(np.array([0.5, 0.3, 0.2]), np.array([100, 100, 100]), 10).tolist() == [5, 3, 2]
    assert allocate(np.array([1 / 3, 1 / 3, 1 / 3]), np.array([9, 9, 9]), 10).sum() == 10
    # a full cluster passes its excess on by weight; when all weighted ones are full, the rest by room
    assert allocate(np.array([0.9, 0.1, 0.0]), np.array([3, 10, 10]), 8).tolist() == [3, 5, 0]
    assert allocate(np.array([1.0, 0.0, 0.0]), np.array([2, 6, 2]), 6).tolist() == [2, 3, 1]


def test_within_nearest_ignores_the_seed_random_follows_it(tmp_path: Path, pool: Path, private: Path) -> None:
    def rows(out: str, **kw: Any) -> list[str]:
        return [r["source"] for r in run(private, pool, tmp_path / out, n=5, epsilon=math.inf, **kw)["rows"]]

    assert rows("n0", within="nearest", seed=0) == rows("n5", within="nearest", seed=5)
    assert rows("r0", seed=0) != rows("r5", seed=5)
    assert topic_counts(tmp_path / "n0")["date"] == 5


def test_all_negative_release_falls_back_to_public_shares(
    tmp_path: Path, pool: Path, private: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selection, "gaussian_noise", lambda std, size, rng: np.full(size, -1000.0))
    s = run(private, pool, tmp_path / "out", n=9)
    assert s["fallback"] and "public pool's own shares" in s["fallback"]
    assert s["histogram"]["selected"] == [3, 3, 3]  # the pool is 30 / 30 / 30
    assert s["histogram"]["private_shares"] == pytest.approx([1 / 3] * 3, abs=1e-6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epsilon": 0.0}, r"epsilon must be > 0 .* got 0\.0"),
        ({"epsilon": -1.0}, r"epsilon must be > 0 .* got -1\.0"),
        ({"epsilon": float("nan")}, r"epsilon must be > 0 .* got nan"),
        ({"delta": 1.0}, r"delta must lie in \(0, 1\), got 1\.0"),
        ({"n": 91}, r"n=91 is more than the public pool holds \(90 samples\)"),
        ({"clusters": 91}, r"clusters=91 is more than the public pool holds \(90 samples\)"),
        ({"n": 0}, r"n \(samples to select\) must be >= 1, got 0"),
        ({"name": "a/b"}, r"name 'a/b'"),
    ],
)
def test_bad_settings_name_the_value(
    tmp_path: Path, pool: Path, private: Path, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(SelectionError, match=message):
        run(private, pool, tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_clear_errors(tmp_path: Path, pool: Path, private: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SelectionError, match=r"private dataset .*empty\.jsonl.* has no records"):
        run(empty, pool, tmp_path / "a")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.md").write_text("mine")
    with pytest.raises(SelectionError, match=r"output folder .*taken exists and is not empty"):
        run(private, pool, taken)
    with pytest.raises(SelectionError, match=r"taken is not a selection folder"):
        select_public(
            str(private),
            [str(pool)],
            taken,
            SelectSettings(n=2, epsilon=1.0, clusters=3),
            embedder=TopicEmbedder(),
            overwrite=True,
        )
    assert (taken / "notes.md").read_text() == "mine"
    with pytest.raises(SelectionError, match=r"pool\.json is both private and public data"):
        run(pool, pool, tmp_path / "b")
    with pytest.raises(SelectionError, match=r"dataset '/no/such\.json': path: .*does not exist"):
        run("/no/such.json", pool, tmp_path / "c")
    with pytest.raises(SelectionError, match=r"'\{path: x\.json, colums: \{\}\}': .*colums: Extra inputs"):
        run("{path: x.json, colums: {}}", pool, tmp_path / "d")


def test_overwrite_replaces_an_earlier_selection(tmp_path: Path, pool: Path, private: Path) -> None:
    out = tmp_path / "out"
    run(private, pool, out, name="first")
    select_public(
        str(private),
        [str(pool)],
        out,
        SelectSettings(n=4, epsilon=1.0, clusters=3, name="second"),
        embedder=TopicEmbedder(),
        overwrite=True,
    )
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["second.jsonl"]


def test_dataset_entry_with_columns_and_max_samples(tmp_path: Path, private: Path) -> None:
    pairs = [{"instruction": f"date q {i}", "input": "", "chosen": f"date a {i}", "rejected": "no"} for i in range(6)]
    pref = write_json(tmp_path / "pairs.json", pairs)
    spec = f"{{path: {pref}, columns: {{response: chosen}}, max_samples: 4}}"
    s = select_public(
        str(private),
        [spec],
        tmp_path / "out",
        SelectSettings(n=3, epsilon=math.inf, clusters=2),
        embedder=TopicEmbedder(),
    )
    assert s["public_size"] == 4
    got = resolve(DatasetSpec(name="selected"), str(tmp_path / "out"))
    source, record = next(iter(read_records(tmp_path / "out" / "selected.jsonl")))
    sample = format_record(got.format, record, got.format_spec, source)
    assert sample.messages[-1].content.startswith("date a")  # type: ignore[union-attr]


def test_cli_select(tmp_path: Path, pool: Path, private: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setattr(selection, "MiniLM", TopicEmbedder)
    out = tmp_path / "out"
    args = ["data", "select", "--private", str(private), "--public", str(pool), "--n", "6", "--clusters", "3"]
    assert main([*args, "--epsilon", "inf", "--out", str(out), "--name", "picked"]) == 0
    printed = capsys.readouterr().out
    assert "epsilon = inf" in printed and f"data.dataset_dir={out}" in printed and "{name: picked}" in printed
    assert topic_counts(out, "picked") == {"date": 6, "math": 0, "cook": 0}
    assert main([*args, "--epsilon", "1", "--out", str(out)]) == 2  # exists: refused
    assert main([*args, "--epsilon", "0", "--out", str(tmp_path / "x")]) == 2
    assert "epsilon must be > 0" in capsys.readouterr().err
    assert main(["data", "select", "--private", str(private), "--n", "3", "--epsilon", "1", "--out", "x"]) == 2
    assert "needs --public" in capsys.readouterr().err


@pytest.mark.slow
def test_real_embedder_finds_the_date_cluster(tmp_path: Path) -> None:
    dates = ["14 March 2021", "the 2nd of May 1999", "July 4, 1976", "3 October 2010", "January 9, 2003"]
    public = [{"instruction": f"Write {d} as YYYY-MM-DD.", "input": "", "output": "?"} for d in dates * 2]
    public += [{"instruction": f"What is {a} plus {a + 3}?", "input": "", "output": str(2 * a + 3)} for a in range(10)]
    public += [
        {"instruction": f"How long do I boil {f}?", "input": "", "output": "minutes"}
        for f in ["eggs", "rice", "pasta", "potatoes", "beans", "lentils", "corn", "peas", "carrots", "noodles"]
    ]
    pool = write_json(tmp_path / "pool.json", public)
    priv = write_json(
        tmp_path / "p.json",
        [
            alpaca("x", 0) | {"instruction": f"Convert {d} to ISO 8601"}
            for d in ["1 June 2020", "August 8, 1988", "the 5th of May 2005"] * 4
        ],
    )
    s = select_public(str(priv), [str(pool)], tmp_path / "out", SelectSettings(n=8, epsilon=math.inf, clusters=3))
    chosen = [r["instruction"] for _, r in read_records(tmp_path / "out" / "selected.jsonl")]
    assert s["embedder"] == "all-MiniLM-L6-v2" and sum("YYYY" in c for c in chosen) == 8
