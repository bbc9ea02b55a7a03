"""The `code_review` recipe: a local git repository's history into LLaMA-Reviewer's three tasks (alpaca records,
prompts from tuneforge.data.code_review). The heuristics, and what they cannot know, are in
docs/recipes/code_review.md; in short:

- a **review follow-up** is a non-merge commit whose subject reads like one ("review fixes: ...", "address review
  comments", "per review", "apply suggestions from code review", "fixup! ...", "nit: ...") or that carries a
  `Review:` / `Review-comment:` trailer;
- **necessity**: a hunk is `yes` when a later review follow-up changed lines it added (`git blame` of the
  follow-up's parent names the commit and line each changed line came from), `no` otherwise; hunks newer than
  the last follow-up are left out (nothing could have followed them up yet), and the `no` hunks are thinned to
  `negative_ratio` per `yes` hunk by a fixed hash order;
- **comment**: a `yes` hunk -> the follow-up's text (its trailer, else the clause of its message, its leading
  review phrase cut, that shares the most identifiers with the two hunks), source `review`; and every hunk ->
  its own commit's subject, source `message` (`comment_source` picks);
- **refinement**: the code a hunk covers before the change + that comment -> the code after it: the follow-up's
  own hunks (source `review`) and every other commit's hunks with its subject (source `message`); not for a
  hunk with no code before it (a new file) or one that changes whitespace only.

Records hold, beside instruction/input/output, CodeReviewer's field names (`patch`, `y`, `msg`; `old`, `new`,
`comment`) so the `codereviewer` eval reader reads the held-out files, and `commit`, `file`, `source`.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tuneforge.data.code_review import InputStyle, Task, code_lines, necessity_answer, record
from tuneforge.data.recipes.git_history import Commit, GitError, Hunk, blame, commits
from tuneforge.data.schema import DataError

Record = dict[str, Any]
CommentSource = Literal["review", "message", "both"]

REVIEW_SUBJECT = re.compile(
    r"^(?:fixup|squash|amend)!\s"  # git commit --fixup / --squash
    r"|^(?:code\s+)?review\b"  # "review fixes: ...", "review: ..."
    r"|\baddress(?:es|ed|ing)?\s+(?:(?:the|all|some|pr|code|reviewers?'?s?)\s+)*"
    r"(?:review|comments?|feedback|remarks|suggestions?|nits?)\b"
    r"|\b(?:per|after|from|following)\s+(?:the\s+)?(?:code\s+)?review\b"
    r"|\breview\s+(?:comments?|feedback|fix(?:es)?|remarks|suggestions?|findings)\b"
    r"|\bapply\s+suggestions?\s+from\s+(?:code\s+)?review\b"
    r"|\bas\s+suggested\b"
    r"|^nits?\b",
    re.IGNORECASE,
)
REVIEW_TRAILER = re.compile(r"^(?:review|review-comment|reviewer-comment):[ \t]*(\S.*)$", re.IGNORECASE | re.MULTILINE)
# trailer lines that say who or where, never what to change: left out of the comment text
_TRAILER_LINE = re.compile(
    r"^(?:[A-Za-z]+(?:-[A-Za-z]+)*-(?:by|to)|change-id|reviewed-on|link|fixes|closes|refs?|bug|cc):\s", re.IGNORECASE
)
# the review phrase that leads a subject, up to its ':' / '-' / ',' ("review fixes:", "Address review comments
# from Ana:", "per review,"): cut from the comment text
_LEAD = re.compile(rf"^(?:{REVIEW_SUBJECT.pattern})[\w' ]{{0,40}}?\s*[:\-–,]\s*", re.IGNORECASE)
_AUTOSQUASH = re.compile(r"^(?:fixup|squash|amend)!\s", re.IGNORECASE)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_COMMON = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "from",
        "this",
        "that",
        "not",
        "are",
        "was",
        "its",
        "into",
        "when",
        "only",
        "one",
        "all",
        "any",
        "but",
        "can",
        "has",
    ]
)
SKIPPED_FILES = re.compile(r"(?:\.lock|package-lock\.json|\.min\.js|\.min\.css|\.map|\.svg)$")
MIN_WORDS = 3  # a comment of fewer words ("fix", "review fixes") says nothing to learn from


@dataclass(frozen=True)
class ReviewSettings:
    input_style: InputStyle = "instruction"
    comment_source: CommentSource = "both"
    holdout: float = 0.1
    negative_ratio: float = 1.0
    max_hunk_lines: int = 40


@dataclass
class Split:
    train: list[Record] = field(default_factory=list)
    test: list[Record] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, rec: Record, held_out: bool, count: str) -> None:
        (self.test if held_out else self.train).append(rec)
        self.counts[count] = self.counts.get(count, 0) + 1


def _body(commit: Commit) -> str:
    return commit.message.strip().partition("\n")[2]


def is_follow_up(commit: Commit) -> bool:
    return bool(REVIEW_SUBJECT.search(commit.subject) or REVIEW_TRAILER.search(_body(commit)))


def clauses(commit: Commit) -> list[str]:
    """The candidate comment texts of a follow-up: its review trailers, else the clauses of its message (the
    subject without its "review fixes:" prefix, then each body line, split at ';' and at the commas of a list),
    each of MIN_WORDS or more words and not just the review phrase itself ("address review comments")."""
    trailers = [t.strip() for t in REVIEW_TRAILER.findall(_body(commit))]  # trailers: below the subject
    if trailers:
        return [t for t in trailers if len(t.split()) >= MIN_WORDS]
    subject, _, rest = commit.message.strip().partition("\n")
    subject = "" if _AUTOSQUASH.match(subject) else _LEAD.sub("", subject.strip())  # fixup! names the target
    lines = [subject, *(ln for ln in rest.splitlines() if not _TRAILER_LINE.match(ln.strip()))]
    out = []
    for line in lines:
        for part in (p for piece in line.split(";") for p in _items(piece)):
            text = part.strip().lstrip("-*• ").strip()
            residue = REVIEW_SUBJECT.sub("", text)
            if len(text.split()) >= MIN_WORDS and len(residue.split()) >= MIN_WORDS:
                out.append(text)
    return out


def _items(text: str) -> list[str]:
    """A list of three or more items separated by commas outside brackets ("a (x, y), b, c") split at them;
    any other text whole (one comma is more often a sentence's than a list's)."""
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0 and text[k + 1 : k + 2] == " ":
            parts.append(text[start:k])
            start = k + 1
    parts.append(text[start:])
    return parts if len(parts) >= 3 else [text]


def best_clause(candidates: Sequence[str], *hunks: Hunk) -> str | None:
    """The clause sharing the most identifiers with the hunks (and their file names); the first on a tie."""
    if not candidates:
        return None
    near = {w.lower() for h in hunks for w in _IDENT.findall(f"{h.path}\n{h.text}")} - _COMMON
    shared = [len({w.lower() for w in _IDENT.findall(c)} & near) for c in candidates]
    return candidates[shared.index(max(shared))]


def _usable(hunk: Hunk, max_lines: int) -> bool:
    changed = any(line[0] in "+-" for line in hunk.lines)
    return changed and len(hunk.lines) <= max_lines and not SKIPPED_FILES.search(hunk.path)


def _follow_ups_of(repo: Path, history: Sequence[Commit]) -> tuple[dict[tuple[str, int], tuple[Commit, Hunk]], int]:
    """(commit, hunk index) of every hunk a later review follow-up changed -> the first such follow-up and its
    hunk: `git blame` of the follow-up's parent over the lines the follow-up's hunk acts on; and how many
    follow-up hunks blame could not read."""
    added: dict[tuple[str, str], list[Hunk]] = defaultdict(list)
    for c in history:
        for h in c.hunks:
            added[(c.sha, h.path)].append(h)
    found: dict[tuple[str, int], tuple[Commit, Hunk]] = {}
    unblamed = 0
    for f in history:
        if not f.parents or not is_follow_up(f):
            continue
        for fh in f.hunks:
            try:
                origins = blame(repo, f"{f.sha}^", fh.old_path, fh.touched())
            except GitError:  # a path blame cannot read (a submodule): counted in the card, not fatal
                unblamed += 1
                continue
            for sha, path, line in origins:
                for h in added.get((sha, path), []):
                    if line in h.added():
                        found.setdefault((sha, h.index), (f, fh))
    return found, unblamed


def _held_out(history: Sequence[Commit], share: float) -> set[str]:
    """The newest `share` of the commits (at least one when share > 0 and there are two or more)."""
    n = round(len(history) * share)
    if share > 0 and n == 0 and len(history) >= 2:
        n = 1
    return {c.sha for c in history[len(history) - n :]} if n else set()


def _meta(commit: Commit, hunk: Hunk, **fields: Any) -> Record:
    return {**fields, "commit": commit.sha, "file": hunk.path}


def mine(repo: Path, s: ReviewSettings) -> tuple[dict[Task, Split], dict[str, int]]:
    """The three tasks' records of one repository (train and held-out), and counts for the data card."""
    history = commits(repo)
    linked, unblamed = _follow_ups_of(repo, history)
    test = _held_out(history, s.holdout)
    follow_ups = [i for i, c in enumerate(history) if c.parents and is_follow_up(c)]
    last = follow_ups[-1] if follow_ups else -1
    out: dict[Task, Split] = {"review_necessity": Split(), "review_comment": Split(), "code_refinement": Split()}
    labelled: list[tuple[Commit, Hunk, bool]] = []
    kept = skipped = 0
    for i, c in enumerate(history):
        review = c.parents and is_follow_up(c)
        for h in c.hunks:
            if not _usable(h, s.max_hunk_lines):
                skipped += 1
                continue
            kept += 1
            link = linked.get((c.sha, h.index))
            if i < last:
                labelled.append((c, h, link is not None))
            if link is not None and s.comment_source != "message":
                _comment(out, c, h, best_clause(clauses(link[0]), h, link[1]), "review", s, test)
            if review and s.comment_source != "message":
                _refinement(out, c, h, best_clause(clauses(c), h), "review", s, test)
            elif not review and s.comment_source != "review":
                subject = c.subject if len(c.subject.split()) >= MIN_WORDS else None
                _comment(out, c, h, subject, "message", s, test)
                _refinement(out, c, h, subject, "message", s, test)
    _necessity(out["review_necessity"], labelled, s, test)
    return out, {
        "commits": len(history),
        "hunks_kept": kept,
        "hunks_skipped": skipped,
        "review_follow_ups": len(follow_ups),
        "follow_up_hunks_not_blamed": unblamed,
        "held_out_commits": len(test),
    }


def _comment(out: dict[Task, Split], c: Commit, h: Hunk, text: str | None, source: str, s: ReviewSettings,
             test: set[str]) -> None:  # fmt: skip
    if text:
        rec = record("review_comment", s.input_style, h.text, text) | _meta(c, h, patch=h.text, msg=text, source=source)
        out["review_comment"].add(rec, c.sha in test, f"from_{source}")


def _refinement(out: dict[Task, Split], c: Commit, h: Hunk, text: str | None, source: str, s: ReviewSettings,
                test: set[str]) -> None:  # fmt: skip
    # a new file has no code to revise, and a change of whitespace only teaches nothing
    if text and h.before.strip() and code_lines(h.before) != code_lines(h.after):
        rec = record("code_refinement", s.input_style, h.before, h.after, text)
        rec |= _meta(c, h, old=h.before, new=h.after, comment=text, source=source)
        out["code_refinement"].add(rec, c.sha in test, f"from_{source}")


def _necessity(split: Split, labelled: list[tuple[Commit, Hunk, bool]], s: ReviewSettings, test: set[str]) -> None:
    """Every `yes` hunk, and the `no` hunks first in a fixed hash order up to negative_ratio per `yes` one."""
    yes = [x for x in labelled if x[2]]
    no = sorted(
        (x for x in labelled if not x[2]), key=lambda x: hashlib.sha1(f"{x[0].sha}:{x[1].index}".encode()).hexdigest()
    )
    keep = len(no) if s.negative_ratio == 0 else round(s.negative_ratio * len(yes))
    split.counts["no_left_out"] = len(no) - min(keep, len(no))
    chosen = {(c.sha, h.index) for c, h, _ in yes + no[:keep]}
    for c, h, label in labelled:  # history order
        if (c.sha, h.index) in chosen:
            rec = record("review_necessity", s.input_style, h.text, necessity_answer(label))
            split.add(rec | _meta(c, h, patch=h.text, y=int(label)), c.sha in test, "yes" if label else "no")


def code_review_sets(repos: Sequence[Path], s: ReviewSettings) -> tuple[dict[Task, Split], dict[str, Any]]:
    """The records of every repository, concatenated; each repository's newest commits are its held-out part."""
    if not repos:
        raise DataError("the code_review recipe needs a git repository: tuneforge data prepare REPO ...")
    sets: dict[Task, Split] = {"review_necessity": Split(), "review_comment": Split(), "code_refinement": Split()}
    mined: dict[str, Any] = {"repositories": [str(r) for r in repos], "input_style": s.input_style}
    for repo in repos:
        found, counts = mine(Path(repo), s)
        for task, split in found.items():
            sets[task].train += split.train
            sets[task].test += split.test
            for k, v in split.counts.items():
                sets[task].counts[k] = sets[task].counts.get(k, 0) + v
        for k, v in counts.items():
            mined[k] = mined.get(k, 0) + v
    return sets, mined


__all__ = [
    "REVIEW_SUBJECT",
    "ReviewSettings",
    "Split",
    "best_clause",
    "clauses",
    "code_review_sets",
    "is_follow_up",
    "mine",
]
