"""The three code-review tasks of LLaMA-Reviewer (Lu et al. 2023) and CodeReviewer (Li et al. 2022): one owner of
their prompts and answers for training (the `code_review` recipe of `tuneforge data prepare`, which writes alpaca
records) and evaluation (the `review_necessity`, `review_comment` and `code_refinement` task types), so both
see the same user turn.

  review_necessity  diff hunk -> "yes" (it needs a review comment) / "no"
  review_comment    diff hunk -> the review comment
  code_refinement   code + review comment -> the revised code

Two input styles, LLaMA-Reviewer's input-representation ablation:

  instruction  the task's instruction, a newline, then the input (the alpaca record's `instruction` and `input`)
  raw          the input alone: the diff hunk (refinement: the code, a blank line, the comment); one task per run

The user turn is the alpaca format's join (instruction, newline, input), so a record trains on exactly the text
that evaluation shows for the same hunk.
"""

from __future__ import annotations

from typing import Literal, get_args

from tuneforge.config import InputStyle  # prepare.input_style and eval.tasks[].input_style: the same values
from tuneforge.data.schema import DataError

Task = Literal["review_necessity", "review_comment", "code_refinement"]
TASKS: tuple[Task, ...] = get_args(Task)

INSTRUCTIONS: dict[Task, str] = {
    "review_necessity": "Does this code change need a review comment? Answer yes or no.",
    "review_comment": "Review this code change: write the comment a reviewer would leave on it.",
    "code_refinement": "Revise the code as the review comment asks. Reply with the revised code only.",
}
ANSWERS: tuple[str, str] = ("no", "yes")  # review_necessity; index 1, "yes" (needs a comment), is the positive class


def body(task: Task, style: InputStyle, code: str, comment: str | None = None) -> str:
    """The input part of the user turn: the hunk, or for refinement the code and the comment."""
    code = code.strip("\n")
    if task != "code_refinement":
        return code
    if not comment or not comment.strip():
        raise DataError("a code_refinement item needs the review comment the revision answers")
    if style == "raw":
        return f"{code}\n\n{comment.strip()}"
    return f"Code:\n{code}\n\nReview comment:\n{comment.strip()}"


def instruction(task: Task, style: InputStyle) -> str:
    if style not in get_args(InputStyle):
        raise DataError(f"input_style {style!r}: choose from {', '.join(get_args(InputStyle))}")
    return INSTRUCTIONS[task] if style == "instruction" else ""


def user_turn(task: Task, style: InputStyle, code: str, comment: str | None = None) -> str:
    """The user turn, as the alpaca format joins a `record`'s instruction and input (data.formats.alpaca)."""
    return "\n".join(p for p in (instruction(task, style), body(task, style, code, comment)) if p)


def record(task: Task, style: InputStyle, code: str, answer: str, comment: str | None = None) -> dict[str, str]:
    """The alpaca record of one item (`instruction` is empty in the raw style)."""
    return {"instruction": instruction(task, style), "input": body(task, style, code, comment), "output": answer}


def necessity_answer(needs_comment: bool) -> str:
    return ANSWERS[int(needs_comment)]


def code_lines(text: str) -> str:
    """CodeReviewer's comparison of code for exact match: whitespace runs (line breaks too) as one space."""
    return " ".join(text.split())


__all__ = [
    "ANSWERS",
    "INSTRUCTIONS",
    "TASKS",
    "InputStyle",
    "Task",
    "body",
    "code_lines",
    "instruction",
    "necessity_answer",
    "record",
    "user_turn",
]
