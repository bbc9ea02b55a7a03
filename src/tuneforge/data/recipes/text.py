"""Recipes on prose: paragraph chunks (continued pre-training), template QA pairs, keyword–chunk pairs.

Template QA needs no model: it turns the sentences that define something ("Varnholt is a harbour town ...",
"Ilse Marrow was a cartographer ...") into "What is Varnholt?" / "Who was Ilse Marrow?" with the sentence as
the answer, and markdown sections into "What does <doc> say about <heading>?" with the section as the
answer. Model-generated QA (`generated_qa`) asks a model for one question–answer pair per chunk.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

from tuneforge.data.documents import Chunk, Document, terms

Record = dict[str, str]
Generate = Callable[[list[str]], list[str]]  # prompts -> completions (a chat model answering each prompt)

# "<Subject> is|was|are|were <rest>." with a capitalised subject of at most 8 words and no clause break
DEFINITION = re.compile(
    r"^(?P<subj>[A-Z][\w'\-]*(?: [\w'\-]+){0,7}?) (?P<verb>is|was|are|were) (?P<rest>[^.!?]{3,})[.!]$"
)
PERSON_WORDS = re.compile(
    r"\b(person|man|woman|king|queen|inventor|writer|poet|painter|cartographer|scientist|engineer|founder|"
    r"merchant|captain|ruler|mayor|scholar|physician|architect|composer|explorer|teacher|author)\b",
    re.I,
)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def chunk_records(chunks: Sequence[Chunk]) -> list[Record]:
    """Text-format records for stage pt: one per chunk."""
    return [{"text": c.text.strip()} for c in chunks if c.text.strip()]


def sentences(text: str) -> list[str]:
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return [s.strip() for s in SENTENCE_END.split(flat) if s.strip()]


def template_qa(documents: Sequence[Document]) -> list[Record]:
    out: list[Record] = []
    for doc in documents:
        if doc.kind != "text":
            continue
        for sentence in sentences(doc.text):
            m = DEFINITION.match(sentence)
            if m is None:
                continue
            who = "Who" if PERSON_WORDS.search(m["rest"].split(",")[0]) else "What"
            out.append({"instruction": f"{who} {m['verb']} {m['subj']}?", "input": "", "output": sentence})
        out += _section_qa(doc)
    return out


def _section_qa(doc: Document) -> list[Record]:
    out = []
    title = doc.title or doc.id
    parts = re.split(r"^#{1,6}\s+(.+)$", doc.text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.strip()
        if body and heading.strip().lower() != title.lower():
            out.append({"instruction": f"What does {title} say about {heading.strip()}?", "input": "", "output": body})
    return out


def keywords(chunks: Sequence[Chunk], n: int = 3) -> list[list[str]]:
    """The n terms of each chunk with the highest TF-IDF against all chunks (ties: first occurrence)."""
    counts = [Counter(terms(c.text)) for c in chunks]
    df = Counter(t for c in counts for t in c)
    total = len(chunks)
    out = []
    for c in counts:
        score = {t: tf * math.log((1 + total) / (1 + df[t])) for t, tf in c.items() if len(t) > 2 and not t.isdigit()}
        out.append(sorted(score, key=lambda t: -score[t])[:n])
    return out


def keyword_records(chunks: Sequence[Chunk], n: int = 3) -> list[Record]:
    """ "Write a passage about: k1, k2, k3" -> the chunk: teaches which facts go with which names."""
    return [
        {"instruction": f"Write a passage about: {', '.join(kws)}.", "input": "", "output": c.text.strip()}
        for c, kws in zip(chunks, keywords(chunks, n), strict=True)
        if kws
    ]


QA_PROMPT = (
    "Read the passage and write one question that it answers, then the answer, in this form:\n"
    "Question: ...\nAnswer: ...\n\nPassage:\n{passage}"
)


def parse_qa(text: str) -> tuple[str, str] | None:
    m = re.search(r"Question:\s*(.+?)\s*Answer:\s*(.+)", text, flags=re.S | re.I)
    if m is None:
        return None
    question, answer = m[1].strip(), m[2].strip()
    return (question, answer) if question and answer else None


def generated_qa(chunks: Sequence[Chunk], generate: Generate) -> tuple[list[Record], int]:
    """One model-written QA pair per chunk; returns the records and how many replies could not be parsed."""
    replies = generate([QA_PROMPT.format(passage=c.text.strip()) for c in chunks])
    out, failed = [], 0
    for reply in replies:
        qa = parse_qa(reply)
        if qa is None:
            failed += 1
            continue
        out.append({"instruction": qa[0], "input": "", "output": qa[1]})
    return out, failed


__all__ = [
    "QA_PROMPT",
    "Generate",
    "Record",
    "chunk_records",
    "generated_qa",
    "keyword_records",
    "keywords",
    "parse_qa",
    "sentences",
    "template_qa",
]
