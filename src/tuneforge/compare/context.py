"""What each arm's prompt holds besides the question, chosen once and written to `prompts/<context>.json`, so
every model answering with that context sees the same shots or passages (and a reader can see them too).

- few-shot `random`: k training samples drawn per item, seeded by eval.seed and the item's id (as tuneforge.eval
  draws its own shots);
- few-shot `similar`: the k training samples whose questions the retriever ranks nearest to the item's question
  (rag.retriever over an index of the training questions, tuneforge.rag.index); an item whose question shares too
  little with the pool (BM25 finds fewer than k) gets the rest drawn at random, and the file counts them;
- `rag`: the top rag.top_k passages of the documents' index for the item's question, put before the question in
  the same user turn (the knowledge lab's wording, tuneforge.rag.pipeline.RAG_INSTRUCTION).

A few-shot example is the sample's last user turn and its answer, shown as a user and an assistant turn before
the question (tuneforge.eval's k-shot chat).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.compare.source import CompareError
from tuneforge.config import RunConfig
from tuneforge.data.schema import Conversation
from tuneforge.eval.prompts import Item
from tuneforge.eval.readers import Example
from tuneforge.rag.index import IndexSettings, RagIndex, make_embedder
from tuneforge.utils.progress import progress_bar

if TYPE_CHECKING:  # plan.py checks for leaks with this module's shot and query_of
    from tuneforge.compare.plan import Arm, ComparePlan

log = logging.getLogger("tuneforge.compare")

PROMPTS = "prompts"
POOL_FILE = "pool.jsonl"
ROW = re.compile(r":row (\d+)$")
NO_PASSAGES = "(no passage was found)"  # what the prompt says where the retriever found nothing


def query_of(ex: Example) -> str:
    """What retrieval searches with: the item's instruction and question."""
    return "\n".join(p for p in (ex.instruction, ex.question) if p)


def shot(conv: Conversation) -> dict[str, str]:
    """A training sample as a solved example: its last user turn and the answer after it."""
    users = [m for m in conv.messages[:-1] if m.role == "user"]
    if not users:
        raise CompareError(f"{conv.source}: a training sample without a user turn cannot be a few-shot example")
    return {"question": users[-1].content, "answer": conv.messages[-1].content, "source": conv.source}


def random_shots(items: Sequence[Item], pool_size: int, k: int, seed: int) -> list[list[int]]:
    return [random.Random(f"{seed}:{i.example.id}").sample(range(pool_size), k) for i in items]


def _open_index(folder: Path, cfg: RunConfig, settings: IndexSettings) -> RagIndex:
    embedder = make_embedder(cfg.rag.embedder) if cfg.rag.retriever in ("dense", "hybrid") else None
    if (folder / "index.json").is_file():
        return RagIndex.open(folder, embedder)  # a rerun: unchanged files are skipped by add()
    return RagIndex.create(folder, settings, embedder)


def similar_shots(
    items: Sequence[Item], pool: list[Conversation], k: int, cfg: RunConfig, folder: Path
) -> tuple[list[list[int]], int]:
    """Per item, the pool rows nearest to its question (rag.retriever); and how many items needed random fill."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": shot(c)["question"]}, ensure_ascii=False) for c in pool]
    (folder / POOL_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    # one chunk per question: a question longer than a chunk still maps back to its row (ids end in ":row N")
    index = _open_index(folder / "index", cfg, IndexSettings("paragraph", 10_000, 0))
    index.add(folder / POOL_FILE)
    picks, filled = [], 0
    with progress_bar(len(items), f"few-shot similar k={k}: retrieving", unit="item") as bar:
        for item in items:
            hits = index.search(query_of(item.example), k=min(len(pool), 4 * k), mode=cfg.rag.retriever)
            rows = list(dict.fromkeys(int(m.group(1)) - 1 for h in hits if (m := ROW.search(h.chunk.doc_id))))[:k]
            if len(rows) < k:
                filled += 1
                rest = [r for r in range(len(pool)) if r not in rows]
                rows += random.Random(f"{cfg.eval.seed}:{item.example.id}").sample(rest, k - len(rows))
            picks.append(rows)
            bar.update(1)
    return picks, filled


def rag_passages(items: Sequence[Item], documents: list[Path], cfg: RunConfig, folder: Path) -> list[dict[str, Any]]:
    """Per item, the retrieved passages as the prompt shows them, and their chunk ids."""
    from tuneforge.rag.pipeline import passages_block

    rag = cfg.rag
    index = _open_index(folder, cfg, IndexSettings(rag.chunking, rag.chunk_size, rag.chunk_overlap))
    for doc in documents:
        report = index.add(doc)
        log.info("compare rag index %s: %d chunks embedded", doc, report.chunks_embedded)
    out = []
    with progress_bar(len(items), "rag: retrieving", unit="item") as bar:
        for item in items:
            hits = index.search(query_of(item.example), k=rag.top_k, mode=rag.retriever, rrf_k=rag.rrf_k)
            out.append({"passages": passages_block(hits) or NO_PASSAGES, "chunks": [h.chunk.id for h in hits]})
            bar.update(1)
    empty = sum(1 for x in out if not x["chunks"])
    if empty:  # BM25 leaves out chunks that share no word with the question
        log.info("rag: %d of %d questions found no passage (%s)", empty, len(out), rag.retriever)
    return out


def build_contexts(plan: ComparePlan) -> dict[str, Path]:
    """Every context the arms use, written to <out>/prompts/<context>.json; context -> its file."""
    cfg, items, folder = plan.cfg, plan.source.task.items, plan.out / PROMPTS
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for arm in plan.arms:
        if arm.context == "plain" or arm.context in files:
            continue
        path = folder / f"{arm.context}.json"
        files[arm.context] = path
        record: dict[str, Any] = {"context": arm.context}
        if arm.kind.prompt == "rag":
            record["items"] = rag_passages(items, plan.source.documents, cfg, plan.out / "index")
        else:
            record |= _few_shot(arm, plan)
        record["item_ids"] = [i.example.id for i in items]
        path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        log.info("compare: %s prompts written to %s", arm.context, path)
    return files


def _few_shot(arm: Arm, plan: ComparePlan) -> dict[str, Any]:
    pool, k, items = plan.source.pool(), arm.spec.k, plan.source.task.items
    if arm.spec.select == "random":
        picks, filled = random_shots(items, len(pool), k, plan.cfg.eval.seed), 0
    else:
        picks, filled = similar_shots(items, pool, k, plan.cfg, plan.out / "fewshot")
    if filled:
        log.info("few-shot similar: %d of %d items had < %d similar examples; filled at random", filled, len(items), k)
    return {"filled_at_random": filled, "items": [{"shots": [shot(pool[r]) for r in rows]} for rows in picks]}


def apply_context(items: Sequence[Item], context: dict[str, Any] | None) -> list[Item]:
    """The held-out items with the context's shots or passages; the items of a plain arm as they are."""
    if context is None:
        return list(items)
    if context["item_ids"] != [i.example.id for i in items]:
        raise CompareError(f"prompts for {context['context']} were chosen for other items; delete that file to redo")
    out = []
    for item, extra in zip(items, context["items"], strict=True):
        if "passages" in extra:
            out.append(Item(with_passages(item.example, extra["passages"])))
        else:
            shots = tuple(
                # choices/gold: a cloze multiple-choice task shows choices[gold] as the shot's answer
                Example(f"shot{n}", s["question"], s["answer"], (s["answer"],), 0, reference=s["answer"])
                for n, s in enumerate(extra["shots"])
            )
            out.append(Item(item.example, shots))
    return out


def with_passages(ex: Example, passages: str) -> Example:
    """The passages before the question in its user turn: the lab's RAG prompt, whatever the task's instruction."""
    from tuneforge.rag.pipeline import RAG_INSTRUCTION

    return replace(ex, question=RAG_INSTRUCTION.format(passages=passages) + "\n\n" + ex.question)


__all__ = ["PROMPTS", "apply_context", "build_contexts", "query_of", "random_shots", "shot", "similar_shots"]
