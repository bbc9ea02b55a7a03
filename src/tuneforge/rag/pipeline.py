"""RAG generation: retrieve passages, put them into the chat prompt, answer with citations.

The passages go into the user turn as a numbered list ([1], [2], ...), and the conversation is rendered by
the model's own chat template through `render_prompt` (LocalEngine does), the same way training renders
data; so a model fine-tuned with passages in its prompts is asked in exactly that form. Short numbers are
asked for because small models copy "[2]" far more reliably than a chunk id; they are mapped back to the
chunk ids for the citation list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuneforge.config import RagConfig
from tuneforge.data.schema import Message
from tuneforge.inference import GenerationParams, LocalEngine
from tuneforge.rag.index import Hit, RagIndex

RAG_SYSTEM = (
    "Answer the question using the numbered passages. Cite the passages you used by their numbers in "
    "brackets, e.g. [1]. If the passages do not contain the answer, say that you do not know."
)
# The passages before the question in one user turn, no system prompt: the knowledge lab's RAG task and
# compare's RAG arms (a multiple-choice question is scored by log-likelihood, so no citations are asked for).
RAG_INSTRUCTION = "Answer the question using these passages.\n\n{passages}"


@dataclass(frozen=True)
class RagAnswer:
    question: str
    answer: str
    hits: tuple[Hit, ...]  # the passages in the prompt, in rank order
    cited: tuple[str, ...]  # chunk ids the answer cites by number

    @property
    def sources(self) -> list[str]:
        return [h.chunk.id for h in self.hits]

    def to_dict(self) -> dict[str, object]:
        return {
            "question": self.question,
            "answer": self.answer,
            "cited": list(self.cited),
            "sources": [{"id": h.chunk.id, "rank": h.rank, "score": h.score} for h in self.hits],
        }


def passages_block(hits: Sequence[Hit]) -> str:
    return "\n\n".join(f"[{n}] ({h.chunk.id}) {h.chunk.text.strip()}" for n, h in enumerate(hits, start=1))


def rag_user_text(question: str, hits: Sequence[Hit]) -> str:
    if not hits:
        return f"No passages were found.\n\nQuestion: {question}"
    return f"Passages:\n{passages_block(hits)}\n\nQuestion: {question}"


def rag_messages(question: str, hits: Sequence[Hit], system: str | None = RAG_SYSTEM) -> list[Message]:
    """The chat the model answers: a system instruction, then passages and question in one user turn."""
    head = [Message("system", system)] if system else []
    return [*head, Message("user", rag_user_text(question, hits))]


def cited_ids(answer: str, hits: Sequence[Hit]) -> tuple[str, ...]:
    """Chunk ids of the passages the answer cites: by number as [n] (also [n, m] and [n][m]), or by quoting the
    chunk id itself (small models often copy the "(people.txt#0)" label); numbers first, in cited order."""
    numbers = [int(n) for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer) for n in group.split(",")]
    out: list[str] = []
    for n in numbers:
        if 1 <= n <= len(hits) and hits[n - 1].chunk.id not in out:
            out.append(hits[n - 1].chunk.id)
    out += [h.chunk.id for h in hits if h.chunk.id in answer and h.chunk.id not in out]
    return tuple(out)


def retrieve(index: RagIndex, question: str, rag: RagConfig) -> list[Hit]:
    return index.search(question, k=rag.top_k, mode=rag.retriever, rrf_k=rag.rrf_k)


def answer(
    engine: LocalEngine,
    index: RagIndex,
    question: str,
    rag: RagConfig,
    params: GenerationParams | None = None,
    system: str | None = RAG_SYSTEM,
) -> RagAnswer:
    hits = retrieve(index, question, rag)
    params = params or GenerationParams(max_new_tokens=rag.max_new_tokens)
    text = engine.generate(rag_messages(question, hits, system), params)
    return RagAnswer(question, text, tuple(hits), cited_ids(text, hits))


__all__ = [
    "RAG_INSTRUCTION",
    "RAG_SYSTEM",
    "RagAnswer",
    "answer",
    "cited_ids",
    "passages_block",
    "rag_messages",
    "rag_user_text",
    "retrieve",
]


# ---------------------------------------------------------------------------------------------- the CLI verbs


def build_index(rag: RagConfig) -> tuple[RagIndex, list[str]]:
    """`tuneforge rag index`: create rag.index_dir or add to it (new and changed files only)."""
    from pathlib import Path

    from tuneforge.rag.index import IndexSettings, RagError, make_embedder

    if not rag.documents:
        raise RagError("no documents to index: give --docs PATH (or rag.documents=[PATH, ...])")
    folder = Path(rag.index_dir)
    if (folder / "index.json").is_file():
        index = RagIndex.open(folder)
        if (index.settings.chunking, index.settings.chunk_size, index.settings.chunk_overlap) != (
            rag.chunking,
            rag.chunk_size,
            rag.chunk_overlap,
        ):
            raise RagError(
                f"{folder} was built with chunking={index.settings.chunking}, chunk_size="
                f"{index.settings.chunk_size}, chunk_overlap={index.settings.chunk_overlap}; adding with other "
                "settings would mix chunk sizes: use the same settings or a new rag.index_dir"
            )
    else:
        settings = IndexSettings(rag.chunking, rag.chunk_size, rag.chunk_overlap)
        index = RagIndex.create(folder, settings, make_embedder(rag.embedder))
    lines = []
    for doc in rag.documents:
        r = index.add(Path(doc))
        lines.append(
            f"{doc}: {len(r.added)} files added, {len(r.updated)} updated, {len(r.unchanged)} unchanged, "
            f"{r.chunks_embedded} chunks indexed"
        )
    lines.append(f"index {folder}: {len(index.chunks)} chunks from {len(index.files)} files")
    return index, lines


def format_hits(hits: Sequence[Hit], width: int = 160) -> str:
    rows = []
    for h in hits:
        text = " ".join(h.chunk.text.split())
        rows.append(
            f"{h.rank}. [{h.chunk.id}] score {h.score:.4f}\n   {text[:width]}{'...' if len(text) > width else ''}"
        )
    return "\n".join(rows) if rows else "(no passage matched)"
