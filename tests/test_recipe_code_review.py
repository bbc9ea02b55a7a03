"""The code_review recipe: a git repository the test builds, mined into the three tasks; diff parsing, blame
links, comment clauses, the held-out commits, bad input, and what training renders from a mined record."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tuneforge.cli import main
from tuneforge.data.code_review import user_turn
from tuneforge.data.formats import format_record, make_format_spec
from tuneforge.data.recipes import PrepareExistsError, PrepareSettings, prepare
from tuneforge.data.recipes.code_review import ReviewSettings, best_clause, clauses, is_follow_up, mine
from tuneforge.data.recipes.git_history import Commit, Hunk, check_repository, commits, parse_diff
from tuneforge.data.schema import Conversation, DataError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "src" / "tuneforge" / "examples" / "recipes" / "code_review.yaml"

CALC = """def add(a, b):
    return a + b


def divide(a, b):
    return a // b


def total(values):
    result = 0
    for v in values:
        result = add(result, v)
    return result
"""
REPORT = """def header(title):
    return "== " + title + " =="


def line(name, value):
    return f"{name}: {value}"
"""


def _git(repo: Path, *args: str, when: int = 0) -> None:
    stamp = f"2024-01-{1 + when:02d}T12:00:00+00:00"
    env = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    ident = ["-c", "user.name=Tess Ter", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *ident, "-C", str(repo), *args], check=True, capture_output=True, env=env)


def _commit(repo: Path, files: dict[str, str], message: str, when: int) -> None:
    for name, text in files.items():
        (repo / name).write_text(text, encoding="utf-8")
    _git(repo, "add", *files)
    _git(repo, "commit", "-q", "-m", message, when=when)


def make_repo(root: Path) -> Path:
    """Seven commits: three that add code, one that changes it, a review follow-up changing lines of two of them
    (2: the report header, 3: the division), a readme, and a last follow-up with a `Review:` trailer."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, {"calc.py": CALC}, "Add the calculator module with add and divide", 0)
    _commit(repo, {"report.py": REPORT}, "Add string helpers for the report", 1)
    calc = CALC.replace("return a // b", "return a / b")
    _commit(repo, {"calc.py": calc}, "Let divide return a float quotient", 2)
    calc = calc.replace("        result = add(result, v)\n", "        result += v\n")
    _commit(repo, {"calc.py": calc}, "Sum the values without calling add", 3)
    report = REPORT.replace('"== " + title + " =="', '"** " + title + " **"')
    calc = calc.replace("return a / b", 'return a / b if b else float("nan")')
    _commit(
        repo,
        {"report.py": report, "calc.py": calc},
        "review fixes: the report header is bold; divide refuses a zero divisor",
        4,
    )
    _commit(repo, {"README.md": "# Calc\n\nAdds and divides.\n"}, "Describe the modules in a readme", 5)
    report = report.replace('f"{name}: {value}"', 'f"{name} = {value}"')
    message = "Tidy the report line\n\nReview: name and value need a separator\nSigned-off-by: Tess <t@example.com>"
    _commit(repo, {"report.py": report}, message, 6)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("code-review"))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- reading the history -------------------------------------------------------------------------------


def test_commits_are_read_oldest_first_with_their_hunks(repo: Path) -> None:
    history = commits(repo)
    assert [c.subject for c in history][:2] == [
        "Add the calculator module with add and divide",
        "Add string helpers for the report",
    ]
    assert len(history) == 7 and all(len(c.parents) == (0 if i == 0 else 1) for i, c in enumerate(history))
    (h,) = history[2].hunks
    assert h.path == "calc.py" and h.header == "@@ -3,7 +3,7 @@ def add(a, b):"
    assert "-    return a // b" in h.lines and "+    return a / b" in h.lines
    assert "return a // b" in h.before and "return a / b" in h.after and "a // b" not in h.after
    assert h.added() == {6}
    assert [c.subject for c in history][-1] == "Tidy the report line"
    assert "Review: name and value" in history[-1].message


def test_diff_parsing_keeps_lines_that_look_like_headers() -> None:
    diff = (
        "diff --git a/x.sql b/x.sql\n--- a/x.sql\n+++ b/x.sql\n@@ -1,2 +1,2 @@ head\n keep\n"
        "--- an old SQL comment\n+-- a new SQL comment\n\\ No newline at end of file\n"
        "diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hi\n"
        "diff --git a/gone.txt b/gone.txt\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
    )
    first, added, deleted = parse_diff(diff)
    (cut,) = parse_diff("--- a/f\n+++ b/f\n@@ -1,9 +1,9 @@\n a\ndiff --git a/g b/g\n")  # a header that lies
    assert cut.lines == (" a",)
    assert first.lines == (" keep", "--- an old SQL comment", "+-- a new SQL comment")
    assert (first.path, first.old_start, first.new_start) == ("x.sql", 1, 1)
    assert (added.path, added.before, added.after, added.index) == ("new.txt", "", "hi", 1)
    assert (deleted.path, deleted.before, deleted.after) == ("gone.txt", "bye", "")


def test_touched_lines_are_the_removed_ones_or_an_insertions_neighbours() -> None:
    replace = Hunk("f", "f", "@@ -10,3 +10,3 @@", 10, 10, (" a", "-b", "+B", " c"), 0)
    assert replace.touched() == [11] and replace.added() == {11}
    insert = Hunk("f", "f", "@@ -10,2 +10,4 @@", 10, 10, (" a", "+x", "+y", " c"), 0)
    assert insert.touched() == [10, 11] and insert.added() == {11, 12}
    at_end = Hunk("f", "f", "@@ -10,1 +10,2 @@", 10, 10, (" a", "+x"), 0)
    assert at_end.touched() == [10]


@pytest.mark.parametrize(
    ("subject", "review"),
    [
        ("review fixes: the header is bold", True),
        ("Address review comments", True),
        ("addressed PR feedback on the parser", True),
        ("Rename the flag per code review", True),
        ("Apply suggestions from code review", True),
        ("fixup! Add the parser", True),
        ("nit: spacing", True),
        ("Add a reviewer field to the form", False),
        ("Fix the address parser", False),
        ("Preview images in the gallery", False),
    ],
)
def test_follow_up_subjects(subject: str, review: bool) -> None:
    assert is_follow_up(Commit("0" * 40, ("1" * 40,), "", subject, ())) is review


def test_clauses_drop_the_review_phrase_and_the_trailers() -> None:
    def of(message: str) -> list[str]:
        return clauses(Commit("0" * 40, ("1" * 40,), "", message, ()))

    assert of("review fixes: the report header is bold; divide refuses a zero divisor") == [
        "the report header is bold",
        "divide refuses a zero divisor",
    ]
    assert of("review: a (x, y) check, names in one place, tests for the cache") == [
        "a (x, y) check",
        "names in one place",
        "tests for the cache",
    ]
    assert of("Address review comments") == []
    assert of("Address review comments from Ana: cache the header") == ["cache the header"]
    assert of("per review, rename the flag") == ["rename the flag"]
    assert of("fixup! Add the parser") == []  # the subject names the commit it fixes, not the change asked
    assert of("review\n\nReview: keep the header on one line\nSigned-off-by: A <a@b>") == [
        "keep the header on one line"
    ]
    assert of("Apply suggestions from code review\n\n- cache the parsed header\nCo-authored-by: B <b@c>") == [
        "cache the parsed header"
    ]
    hunk = Hunk("calc.py", "calc.py", "@@", 1, 1, ("-    return a // b", "+    return a / b"), 0)
    assert best_clause(["the report header is bold", "a zero divisor for calc"], hunk) == "a zero divisor for calc"
    assert best_clause(["first one here", "second one here"], hunk) == "first one here"  # no overlap: the first


# ---- the three tasks -----------------------------------------------------------------------------------


def test_mined_records(repo: Path) -> None:
    sets, counts = mine(repo, ReviewSettings(holdout=0.2))
    history = commits(repo)
    assert counts == {
        "commits": 7,
        "hunks_kept": 8,
        "hunks_skipped": 0,
        "review_follow_ups": 2,
        "follow_up_hunks_not_blamed": 0,
        "held_out_commits": 1,
    }
    necessity = sets["review_necessity"]
    yes = {(r["commit"], r["file"]) for r in necessity.train if r["y"] == 1}
    assert yes == {(history[1].sha, "report.py"), (history[2].sha, "calc.py")}  # the lines commit 5 changed
    # 7 hunks before the last follow-up: 2 yes, 5 no thinned to 2
    assert necessity.counts == {"yes": 2, "no": 2, "no_left_out": 3} and necessity.test == []
    assert all(r["output"] == ("yes" if r["y"] else "no") for r in necessity.train)
    assert all(r["commit"] in {c.sha for c in history[:6]} for r in necessity.train)  # before the last follow-up

    comments = {(r["commit"][:7], r["source"]): r["msg"] for r in sets["review_comment"].train}
    assert comments[(history[2].sha[:7], "review")] == "divide refuses a zero divisor"
    assert comments[(history[1].sha[:7], "review")] == "the report header is bold"
    assert comments[(history[3].sha[:7], "message")] == "Sum the values without calling add"
    assert not any(c == history[4].sha[:7] for c, _ in comments)  # a follow-up's own hunks: no message comment

    refinement = sets["code_refinement"]
    review = {r["file"]: r for r in refinement.train if r["source"] == "review"}
    assert review["calc.py"]["comment"] == "divide refuses a zero divisor"
    assert "return a / b\n" in review["calc.py"]["old"] + "\n" and 'float("nan")' in review["calc.py"]["new"]
    (held,) = refinement.test  # the newest commit: its trailer is the comment
    assert held["comment"] == "name and value need a separator" and held["commit"] == history[6].sha
    assert 'f"{name} = {value}"' in held["new"] and held["output"] == held["new"]


def test_comment_source_picks_the_records(repo: Path) -> None:
    only_review, _ = mine(repo, ReviewSettings(comment_source="review", holdout=0))
    assert {r["source"] for r in only_review["review_comment"].train} == {"review"}
    assert {r["source"] for r in only_review["code_refinement"].train} == {"review"}
    only_messages, _ = mine(repo, ReviewSettings(comment_source="message", holdout=0))
    assert {r["source"] for r in only_messages["review_comment"].train} == {"message"}
    everything, _ = mine(repo, ReviewSettings(negative_ratio=0, holdout=0))
    assert everything["review_necessity"].counts == {"yes": 2, "no": 5, "no_left_out": 0}


@pytest.mark.parametrize("style", ["instruction", "raw"])
def test_training_renders_the_user_turn_evaluation_shows(repo: Path, style: str) -> None:
    sets, _ = mine(repo, ReviewSettings(input_style=style, holdout=0))  # type: ignore[arg-type]
    spec = make_format_spec("alpaca")
    for task, split in sets.items():
        for r in split.train:
            conv = format_record("alpaca", r, spec, "mined:1")
            assert isinstance(conv, Conversation)
            code = r["old"] if task == "code_refinement" else r["patch"]
            assert conv.messages[0].content == user_turn(task, style, code, r.get("comment"))  # type: ignore[arg-type]
            assert conv.messages[1].content == r["output"]
            assert (r["instruction"] == "") is (style == "raw")


# ---- prepare: files, card, registry, never overwriting --------------------------------------------------


def test_prepare_writes_one_file_per_task_and_the_held_out_ones(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    settings = PrepareSettings("cr", ["code_review"], review=ReviewSettings(holdout=0.2))
    card = prepare([repo], out, settings)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {f"cr_{t}": {"file_name": f"cr_{t}.jsonl", "formatting": "alpaca"} for t in
                    ("review_necessity", "review_comment", "code_refinement")}  # fmt: skip
    assert len(_records(out / "cr_code_refinement_test.jsonl")) == 1
    assert card["datasets"]["cr_review_necessity"]["yes"] == 2 and card["mined"]["review_follow_ups"] == 2
    md = (out / "cr_data_card.md").read_text()
    assert "Mined: 7 non-merge commits" in md and "| `cr_review_comment` | alpaca |" in md
    with pytest.raises(PrepareExistsError, match=r"cr_review_necessity\.jsonl"):
        prepare([repo], out, settings)
    before = (out / "cr_review_comment.jsonl").read_text()
    with pytest.raises(DataError, match="is not a git repository"):
        prepare([tmp_path], out, PrepareSettings("other", ["code_review"]))
    assert not (out / "other_review_comment.jsonl").exists()  # nothing written before mining succeeded
    assert (out / "cr_review_comment.jsonl").read_text() == before


def test_bad_repositories_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such folder"):
        check_repository(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"plain is not a git repository \(.*not a git repository"):
        check_repository(tmp_path / "plain")
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    with pytest.raises(DataError, match=r"empty: the repository has no commits yet"):
        commits(empty)


def test_data_prepare_cli_with_the_recipe_config(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    # the recipe's data.dataset_dir does not exist yet: prepare reads only the prepare: and rag: sections
    args = ["data", "prepare", str(repo), f"prepare.out={out}", "prepare.input_style=raw", "--config", str(RECIPE)]
    assert main(args) == 0
    assert "cr_review_necessity" in capsys.readouterr().out
    assert _records(out / "cr_review_comment.jsonl")[0]["instruction"] == ""
    assert main(["data", "prepare", str(tmp_path), "prepare.recipes=code_review", "--out", str(tmp_path / "o"),
                 "--name", "x"]) == 2  # fmt: skip
    assert "is not a git repository" in capsys.readouterr().err
