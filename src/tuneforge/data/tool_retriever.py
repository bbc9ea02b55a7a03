"""The tool retriever (ToolLLM's API retriever): the k tools of a long list that best fit a request.

When a sample or a request offers more tools than `data.max_tools` (serving: `create_app(max_tools=...)`), the
prompt holds only the top k by BM25 over each tool's name, description and parameter names; tools the sample
itself calls are always kept, so a training sample never asks for a function its prompt does not show.

Okapi BM25 by hand rather than `tuneforge.rag.index` (bm25s): data/ sits below rag/ in the layers, and a tool
list is tens to hundreds of short entries, scored in microseconds without the optional `rag` extra.
docs/tooluse.md reports its recall@k on BFCL multiple.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneforge.data.toolschema import function_of

_WORD = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|\d+")
K1, B = 1.5, 0.75


def tool_terms(text: str) -> list[str]:
    """Lower-cased words; snake_case, camelCase and dotted names split into their parts."""
    return [w.lower() for w in _WORD.findall(text)]


def tool_text(tool: Mapping[str, Any]) -> str:
    fn = function_of(tool)
    params = fn.get("parameters") or {}
    props = params.get("properties") if isinstance(params, Mapping) else None
    names = " ".join(props) if isinstance(props, Mapping) else ""
    return f"{fn.get('name', '')} {fn.get('description', '')} {names}"


def bm25_scores(query: str, docs: Sequence[str]) -> list[float]:
    tokenized = [tool_terms(d) for d in docs]
    n = len(tokenized)
    avg = sum(len(d) for d in tokenized) / n if n else 0.0
    df = Counter(t for d in tokenized for t in set(d))
    q = tool_terms(query)
    scores = []
    for d in tokenized:
        tf = Counter(d)
        s = 0.0
        for t in q:
            if t not in tf:
                continue
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            s += idf * tf[t] * (K1 + 1) / (tf[t] + K1 * (1 - B + B * len(d) / (avg or 1)))
        scores.append(s)
    return scores


def rank_tools(tools: Sequence[Mapping[str, Any]], query: str) -> list[int]:
    """Indices of `tools`, best first (ties keep the given order)."""
    scores = bm25_scores(query, [tool_text(t) for t in tools])
    return sorted(range(len(tools)), key=lambda i: (-scores[i], i))


def select_tools(
    tools: Sequence[Mapping[str, Any]], query: str, k: int | None, keep: Sequence[str] = ()
) -> list[Mapping[str, Any]]:
    """At most k tools (all when k is None or there are no more): those named in `keep`, then the best by BM25,
    in their original order so the prompt reads as the data wrote it."""
    if k is None or len(tools) <= k:
        return list(tools)
    names = [str(function_of(t).get("name", "")) for t in tools]
    chosen = [i for i, name in enumerate(names) if name in set(keep)]
    for i in rank_tools(tools, query):
        if len(chosen) >= max(k, len(set(keep))):
            break
        if i not in chosen:
            chosen.append(i)
    return [tools[i] for i in sorted(chosen)]


def bfcl_recall(folder: Path, ks: Sequence[int] = (1, 2, 3, 5, 10)) -> dict[str, Any]:
    """recall@k of the expected function on BFCL multiple: among each item's own tools, and among all of them."""
    read = (folder / "BFCL_v4_multiple.json").read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in read if line.strip()]
    truth = folder / "possible_answer" / "BFCL_v4_multiple.json"
    answers = {r["id"]: r["ground_truth"] for r in map(json.loads, truth.read_text(encoding="utf-8").splitlines())}
    pool = list({f["name"]: f for it in items for f in it["function"]}.values())
    own, whole = dict.fromkeys(ks, 0), dict.fromkeys(ks, 0)
    for it in items:
        query = " ".join(m["content"] for m in it["question"][0] if m["role"] == "user")
        want = next(iter(answers[it["id"]][0]))
        mine = [it["function"][i]["name"] for i in rank_tools(it["function"], query)]
        every = [pool[i]["name"] for i in rank_tools(pool, query)]
        for k in ks:
            own[k] += want in mine[:k]
            whole[k] += want in every[:k]
    n = len(items)
    return {"items": n, "pool": len(pool), "own": {k: own[k] / n for k in ks}, "all": {k: whole[k] / n for k in ks}}


__all__ = ["bfcl_recall", "bm25_scores", "rank_tools", "select_tools", "tool_terms", "tool_text"]


if __name__ == "__main__":  # python -m tuneforge.data.tool_retriever ../shared/data/bfcl (docs/tooluse.md)
    import sys

    r = bfcl_recall(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/bfcl"))
    print(f"BFCL multiple: {r['items']} items, {r['pool']} distinct tools")
    print("| k | " + " | ".join(map(str, r["own"])) + " |\n|---|" + "---:|" * len(r["own"]))
    print("| among the item's own tools | " + " | ".join(f"{v:.3f}" for v in r["own"].values()) + " |")
    print(f"| among all {r['pool']} tools | " + " | ".join(f"{v:.3f}" for v in r["all"].values()) + " |")
