"""Documents and chunks: read txt, md, jsonl, csv, pdf and source files, then cut them into passages.

Both retrieval (`tuneforge.rag.index`) and the data recipes (`tuneforge.data.recipes`) read documents the
same way, so a chunk id in a RAG citation names the same passage a recipe trained on.

A document is one file, except for jsonl/csv, where each row is a document (`file.jsonl:row 3`).
Chunking is by paragraphs (blank-line separated, merged up to `size` tokens, longer ones split) or by a
sliding window of `size` tokens with `overlap`; tokens are whitespace-separated words, so an index does not
depend on any one model's tokenizer. Python files are cut at top-level definitions (via `ast`), so a
function is never split across chunks unless it alone exceeds `size`.
"""

from __future__ import annotations

import ast
import csv
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuneforge.data.schema import DataError
from tuneforge.data.sources import read_jsonl
from tuneforge.errors import unreadable_text

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
CODE_SUFFIXES = (".py", ".js", ".ts", ".java", ".c", ".h", ".cpp", ".hpp", ".go", ".rs", ".rb", ".sh", ".sql")
ROW_SUFFIXES = (".jsonl", ".csv")
DOCUMENT_SUFFIXES = (*TEXT_SUFFIXES, *CODE_SUFFIXES, *ROW_SUFFIXES, ".pdf")
# Fields a jsonl row's text is taken from, in order; a row without any of them joins its string fields.
TEXT_FIELDS = ("text", "content", "body", "document", "passage")

Chunking = Literal["paragraph", "tokens"]


@dataclass(frozen=True)
class Document:
    id: str  # file path relative to the indexed root, plus ":row N" for jsonl/csv rows
    text: str
    kind: Literal["text", "code", "python"] = "text"
    title: str = ""


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document id>#<n>", n counting from 0: the citation a RAG answer gives
    doc_id: str
    text: str


def document_files(path: Path) -> list[tuple[Path, str]]:
    """(file, document id) for a file or every supported file under a folder (recursive, sorted)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in DOCUMENT_SUFFIXES:
            raise DataError(f"{path}: unsupported document type {path.suffix!r}; supported: {_supported()}")
        return [(path, path.name)]
    if not path.is_dir():
        raise DataError(f"document path {path} does not exist")
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES and not _hidden(p, path)
    )
    if not files:
        raise DataError(f"folder {path} holds no documents; supported: {_supported()}")
    return [(p, p.relative_to(path).as_posix()) for p in files]


def read_documents(path: Path) -> Iterator[Document]:
    for file, doc_id in document_files(path):
        yield from read_file(file, doc_id)


def read_file(file: Path, doc_id: str) -> Iterator[Document]:
    suffix = file.suffix.lower()
    if suffix == ".pdf":
        yield Document(doc_id, _read_pdf(file), "text", file.stem)
    elif suffix == ".jsonl":
        yield from _read_jsonl(file, doc_id)
    elif suffix == ".csv":
        yield from _read_csv(file, doc_id)
    else:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(str(unreadable_text(file, e))) from None
        kind: Literal["text", "code", "python"] = (
            "python" if suffix == ".py" else "code" if suffix in CODE_SUFFIXES else "text"
        )
        yield Document(doc_id, text, kind, file.stem)


def _read_jsonl(file: Path, doc_id: str) -> Iterator[Document]:
    for where, row in read_jsonl(file):
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with a text field, got {row!r:.60}")
        field = next((k for k in TEXT_FIELDS if isinstance(row.get(k), str)), None)
        text = row[field] if field else "\n".join(f"{k}: {v}" for k, v in row.items() if isinstance(v, str))
        if not text.strip():
            raise DataError(f"{where}: no text (give a string field, e.g. {', '.join(TEXT_FIELDS)})")
        yield Document(f"{doc_id}:row {where.rsplit(':', 1)[1]}", text, "text", str(row.get("title", "")))


def _read_csv(file: Path, doc_id: str) -> Iterator[Document]:
    with file.open(encoding="utf-8-sig", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=1):
            text = "\n".join(f"{k}: {v}" for k, v in row.items() if k and v and v.strip())
            if text:
                yield Document(f"{doc_id}:row {n}", text, "text")


def _read_pdf(file: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise DataError(f"{file}: reading PDF needs pypdf: pip install 'tuneforge[rag]'") from None
    try:
        pages = [page.extract_text() or "" for page in PdfReader(str(file)).pages]
    except Exception as e:  # pypdf raises many types on broken files; name the file either way
        raise DataError(f"{file}: cannot read this PDF: {e}") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise DataError(f"{file}: the PDF has no extractable text (scanned images need OCR first)")
    return text


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def _supported() -> str:
    return ", ".join(DOCUMENT_SUFFIXES)


# ---------------------------------------------------------------------------------------------- chunking


def words(text: str) -> list[str]:
    return text.split()


_STOP = "a an and are as at be by for from has have he her his i in is it its of on or she that the their them they"
STOPWORDS = frozenset((_STOP + " this to was were what when where which who whom why will with you your").split(" "))


def terms(text: str) -> list[str]:
    """Search terms: lower-cased word characters without English stopwords (no stemming: exact names matter)."""
    return [t for t in re.findall(r"\w+", text.lower()) if t not in STOPWORDS]


def chunk_document(doc: Document, mode: Chunking = "paragraph", size: int = 200, overlap: int = 32) -> list[Chunk]:
    """The document's passages, in order, with ids `<doc id>#<n>`."""
    if size <= 0 or not 0 <= overlap < size:
        raise DataError(f"chunking needs size > 0 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    if mode == "tokens":
        pieces = window(doc.text, size, overlap)
    elif doc.kind == "python":
        pieces = python_blocks(doc.text, size, overlap, doc.id)
    elif mode == "paragraph":
        pieces = paragraphs(doc.text, size, overlap)
    else:
        raise DataError(f"chunking mode {mode!r} is not one of paragraph, tokens")
    return [Chunk(f"{doc.id}#{n}", doc.id, text) for n, text in enumerate(pieces)]


def window(text: str, size: int, overlap: int) -> list[str]:
    """Windows of `size` words, each starting `size - overlap` words after the previous one; the text between
    the words (newlines, indentation) is kept as it is, so code and lists stay readable."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    step = size - overlap
    out = []
    for start in range(0, len(spans), step):
        last = spans[min(start + size, len(spans)) - 1]
        out.append(text[spans[start][0] : last[1]])
        if start + size >= len(spans):
            break
    return out


def paragraphs(text: str, size: int, overlap: int) -> list[str]:
    """Blank-line separated paragraphs, short neighbours merged up to `size` words, long ones windowed."""
    out: list[str] = []
    current: list[str] = []
    count = 0
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        n = len(words(para))
        if n > size:
            if current:
                out.append("\n\n".join(current))
                current, count = [], 0
            out += window(para, size, overlap)
            continue
        if current and count + n > size:
            out.append("\n\n".join(current))
            current, count = [], 0
        current.append(para)
        count += n
    if current:
        out.append("\n\n".join(current))
    return out


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None)
    return int(decorators[0].lineno) if decorators else node.lineno


def python_blocks(source: str, size: int, overlap: int, where: str) -> list[str]:
    """Top-level statements grouped so that each def/class starts a chunk; unparsable code falls back to
    paragraphs (a source file with a syntax error is still worth retrieving from)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return paragraphs(source, size, overlap)
    lines = source.splitlines()
    starts = sorted({_first_line(n) - 1 for n in tree.body})
    if not starts:
        return paragraphs(source, size, overlap)
    starts[0] = 0  # the module docstring / imports stay with the first statement
    bounds = [*starts, len(lines)]
    ranges: list[list[int]] = []  # [first line, end line): each def/class alone, other statements merged
    for a, b in itertools.pairwise(bounds):
        is_def = lines[a].lstrip().startswith(("def ", "async def ", "class ", "@"))
        merge = ranges and not is_def and not ranges[-1][2] and len(words("\n".join(lines[ranges[-1][0] : b]))) <= size
        if merge:
            ranges[-1][1] = b
        else:
            ranges.append([a, b, int(is_def)])
    blocks = ["\n".join(lines[a:b]).strip() for a, b, _ in ranges]
    out: list[str] = []
    for block in blocks:
        out += window(block, size, overlap) if len(words(block)) > size else [block]
    return [b for b in out if b.strip()]


__all__ = [
    "DOCUMENT_SUFFIXES",
    "Chunk",
    "Chunking",
    "Document",
    "chunk_document",
    "document_files",
    "paragraphs",
    "python_blocks",
    "read_documents",
    "read_file",
    "terms",
    "window",
    "words",
]
