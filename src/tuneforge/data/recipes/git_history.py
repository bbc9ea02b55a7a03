"""A local git repository's history, read through the `git` command (no network, no library): each non-merge
commit of HEAD with its message and its diff split into hunks per file, and `git blame` of a commit's parent
to find which commit wrote the lines a later commit changes.

No git library is used: GitPython and pygit2 would be a dependency for two commands whose output
(`git log -p`, `git blame --line-porcelain`) is a stable, documented text format.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.schema import DataError

# the user's git config must not change the text we parse (colours, prefixes, quoting, signatures)
GIT = ["git", "-c", "core.quotePath=false", "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
       "-c", "log.showSignature=false", "-c", "color.ui=never"]  # fmt: skip
_RECORD, _FIELD = "\x1e", "\x1f"  # separators git prints around each commit's fields (--format)
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class Hunk:
    path: str  # the file after the commit (before it, for a deleted file)
    old_path: str  # the file before the commit (the same unless renamed; the new path for an added file)
    header: str  # "@@ -12,7 +12,9 @@ def f():"
    old_start: int
    new_start: int
    lines: tuple[str, ...]  # the body: each line with its marker (" " context, "-" removed, "+" added)
    index: int  # the hunk's number within its commit

    @property
    def text(self) -> str:
        """The hunk as a diff shows it, CodeReviewer's `patch` layout: the @@ header, then the body."""
        return "\n".join((self.header, *self.lines))

    @property
    def before(self) -> str:
        """The code the hunk covers before the change (context and removed lines, markers dropped)."""
        return "\n".join(line[1:] for line in self.lines if line[0] in " -")

    @property
    def after(self) -> str:
        return "\n".join(line[1:] for line in self.lines if line[0] in " +")

    def added(self) -> set[int]:
        """Line numbers (in the file after the commit) of the lines the hunk adds."""
        return {n for marker, _, n in self.numbered() if marker == "+"}

    def touched(self) -> list[int]:
        """Line numbers (in the file before the commit) the change acts on: the removed lines, and for lines only
        inserted (no removed line next to them), the context lines on either side of the insertion."""
        rows = self.numbered()
        out = {old for marker, old, _ in rows if marker == "-"}
        k = 0
        while k < len(rows):
            if rows[k][0] != "+":
                k += 1
                continue
            end = k
            while end < len(rows) and rows[end][0] == "+":
                end += 1
            sides = [j for j in (k - 1, end) if 0 <= j < len(rows)]
            if all(rows[j][0] != "-" for j in sides):
                out.update(rows[j][1] for j in sides)
            k = end
        return sorted(out)

    def numbered(self) -> list[tuple[str, int, int]]:
        """(marker, old line number, new line number) of every body line; the side a line lacks keeps the
        number of the next line there."""
        old, new, out = self.old_start, self.new_start, []
        for line in self.lines:
            out.append((line[0], old, new))
            old += line[0] in " -"
            new += line[0] in " +"
        return out


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    date: str
    message: str
    hunks: tuple[Hunk, ...]

    @property
    def subject(self) -> str:
        return self.message.strip().split("\n", 1)[0].strip()


class GitError(DataError):
    """git refused; `said` is the last line of its message."""

    def __init__(self, message: str, said: str) -> None:
        super().__init__(message)
        self.said = said


def git(repo: Path, *args: str) -> str:
    """Run git in `repo`; its failure is a GitError with git's own message."""
    try:
        done = subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, check=False)
    except FileNotFoundError:
        raise DataError("the code_review recipe runs `git`, which is not installed (or not on PATH)") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        said = lines[-1].removeprefix("fatal: ") if lines else f"exit status {done.returncode}"
        raise GitError(f"{repo}: git {args[0]} failed: {said}", said)
    return done.stdout.decode("utf-8", "replace")


def check_repository(repo: Path) -> None:
    """A DataError unless `repo` is a git repository whose HEAD has a commit."""
    if not repo.is_dir():
        raise DataError(f"{repo}: no such folder (the code_review recipe reads a local git repository)")
    try:
        git(repo, "rev-parse", "--git-dir")
    except GitError as e:
        raise DataError(f"{repo} is not a git repository (git: {e.said})") from None
    try:
        git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except GitError:
        raise DataError(f"{repo}: the repository has no commits yet (HEAD names no commit)") from None


def commits(repo: Path) -> list[Commit]:
    """Every non-merge commit reachable from HEAD, oldest first, with its hunks (3 lines of context)."""
    check_repository(repo)
    fmt = f"--format={_RECORD}%H{_FIELD}%P{_FIELD}%aI{_FIELD}%B{_FIELD}"
    out = git(repo, "log", "--no-merges", "--reverse", "-p", "-U3", "--no-ext-diff", "--no-textconv", fmt, "HEAD")
    found = []
    for chunk in out.split(_RECORD)[1:]:
        sha, parents, date, message, diff = chunk.split(_FIELD, 4)
        found.append(Commit(sha, tuple(parents.split()), date, message.strip(), tuple(parse_diff(diff))))
    return found


def _path(text: str) -> str | None:
    text = text.strip().strip('"')
    if text == "/dev/null":
        return None
    return text[2:] if text[:2] in ("a/", "b/") else text


def parse_diff(diff: str) -> Iterable[Hunk]:
    """The hunks of a `git diff` text, in order. A hunk's length comes from its header, so a removed line that
    reads like a file header ('--- x') stays in its hunk; a line no hunk line can be ends it early."""
    old_path = new_path = ""
    lines = diff.split("\n")
    i, index = 0, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("diff --git "):
            old_path = new_path = ""
        elif line.startswith("--- "):
            old_path = _path(line[4:]) or ""
        elif line.startswith("+++ "):
            new_path = _path(line[4:]) or ""
        elif m := _HUNK.match(line):
            old_left = int(m[2]) if m[2] is not None else 1
            new_left = int(m[4]) if m[4] is not None else 1
            body: list[str] = []
            while (old_left > 0 or new_left > 0) and i < len(lines) and lines[i][:1] in ("", " ", "+", "-", "\\"):
                row = lines[i]
                i += 1
                if row.startswith("\\"):  # "\ No newline at end of file"
                    continue
                marker = row[:1] or " "  # an empty context line may lose its space
                body.append(marker + row[1:])
                old_left -= marker in " -"
                new_left -= marker in " +"
            path = new_path or old_path
            yield Hunk(path, old_path or path, line, int(m[1]), int(m[3]), tuple(body), index)
            index += 1


def blame(repo: Path, commit: str, path: str, lines: Sequence[int]) -> list[tuple[str, str, int]]:
    """(commit, file, line number there) that wrote each of `lines` of `path` as it stood in `commit`."""
    if not lines:
        return []
    ranges: list[str] = []
    for n in sorted(set(lines)):
        if ranges and int(ranges[-1].split(",")[1]) == n - 1:
            ranges[-1] = f"{ranges[-1].split(',')[0]},{n}"
        else:
            ranges.append(f"{n},{n}")
    args = [a for r in ranges for a in ("-L", r)]
    out = git(repo, "blame", "--line-porcelain", *args, commit, "--", path)
    found, origin = [], ("", 0)
    for row in out.split("\n"):
        head = row.split(" ")
        if len(head) >= 3 and re.fullmatch(r"[0-9a-f]{40}", head[0]):
            origin = (head[0], int(head[1]))
        elif row.startswith("filename "):
            found.append((origin[0], row[len("filename ") :], origin[1]))
    return found


__all__ = ["Commit", "GitError", "Hunk", "blame", "check_repository", "commits", "git", "parse_diff"]
