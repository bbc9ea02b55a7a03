"""Summary–function pairs from Python source: the docstring's summary as the instruction, the function (with
its docstring removed, so the answer does not contain the question) as the answer. Functions without a
docstring get a model-written summary when a model is given, and are counted as skipped otherwise."""

from __future__ import annotations

import ast
import copy
from collections.abc import Sequence
from dataclasses import dataclass

from tuneforge.data.documents import Document
from tuneforge.data.recipes.text import Generate, Record


@dataclass(frozen=True)
class Function:
    name: str
    source: str  # the definition without its docstring
    summary: str  # the docstring's first paragraph ("" when it has none)
    where: str


def functions(doc: Document) -> list[Function]:
    """Every function and method with a body of more than a docstring, in source order."""
    try:
        tree = ast.parse(doc.text)
    except SyntaxError:
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc_string = ast.get_docstring(node) or ""
        body = node.body[1:] if doc_string else node.body
        if not body:
            continue
        stripped = copy.copy(node)  # the same definition without its docstring
        stripped.body = body
        summary = doc_string.strip().split("\n\n")[0].replace("\n", " ").strip()
        out.append(Function(node.name, ast.unparse(stripped), summary, f"{doc.id}:{node.lineno}"))
    return sorted(out, key=lambda f: int(f.where.rsplit(":", 1)[1]))


SUMMARY_PROMPT = "Summarise in one sentence what this Python function does:\n\n{code}"


def code_records(documents: Sequence[Document], generate: Generate | None = None) -> tuple[list[Record], int]:
    """Returns the records and the number of functions skipped (no docstring and no model)."""
    funcs = [f for doc in documents if doc.kind == "python" for f in functions(doc)]
    missing = [f for f in funcs if not f.summary]
    written: dict[str, str] = {}
    if generate is not None and missing:
        replies = generate([SUMMARY_PROMPT.format(code=f.source) for f in missing])
        written = {f.where: r.strip().split("\n")[0] for f, r in zip(missing, replies, strict=True) if r.strip()}
    out = []
    for f in funcs:
        summary = f.summary or written.get(f.where, "")
        if summary:
            out.append({"instruction": f"Write a Python function: {summary}", "input": "", "output": f.source})
    return out, len(funcs) - len(out)


__all__ = ["SUMMARY_PROMPT", "Function", "code_records", "functions"]
