"""Next-token log-probabilities of an exported model against its source, on fixed chat prompts.

Used by `tuneforge export` for every reload (HF folder, GGUF through transformers, GGUF in llama.cpp): per prompt
the max |Δ log-prob| over the vocabulary, KL(source ‖ export) in nats, and the top-1 token of each; for llama.cpp
also whether its tokenizer splits the rendered prompt into the same ids.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.render import render_prompt
from tuneforge.data.schema import Message
from tuneforge.errors import TuneforgeError
from tuneforge.export import llamacpp

log = logging.getLogger("tuneforge.export")


class CheckError(TuneforgeError, ValueError):
    pass


# Fixed prompts of the verification: chat prompts, scored at the position of the first answer token.
VERIFY_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write the date 3 March 2021 in ISO format.",
    "Explain LoRA in one sentence.",
    "hi",
)


def verify_prompts(tokenizer: Any) -> list[list[int]]:
    return [render_prompt(tokenizer, [Message("user", p)]) for p in VERIFY_PROMPTS]


@torch.inference_mode()
def next_token_logprobs(model: Any, prompts: list[list[int]]) -> list[torch.Tensor]:
    out = []
    for ids in prompts:
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        out.append(torch.log_softmax(logits, dim=-1))
    return out


def kl(source: torch.Tensor, export: torch.Tensor) -> float:
    """KL(source ‖ export) in nats from two log-probability vectors."""
    a, b = source.double(), export.double()
    return max(0.0, float((a.exp() * (a - b)).sum()))  # ≥ 0 exactly; float32 log-softmax rounding leaves -1e-7


def compare(source: list[torch.Tensor], exported: list[torch.Tensor]) -> list[dict[str, Any]]:
    """Per prompt: max |Δ log-prob| over the vocabulary, KL(source ‖ export) in nats, top-1 of each."""
    rows = []
    for prompt, a, b in zip(VERIFY_PROMPTS, source, exported, strict=True):
        if a.shape != b.shape:
            raise CheckError(f"the export's vocabulary has {b.shape[-1]} entries, the source's {a.shape[-1]}")
        rows.append(
            {
                "prompt": prompt,
                "max_abs_diff": float((a - b).abs().max()),
                "kl": kl(a, b),
                "top1_source": int(a.argmax()),
                "top1_export": int(b.argmax()),
                "top1_match": bool(a.argmax() == b.argmax()),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    tokens = any("same_tokens" in r for r in rows)
    head = "| prompt | max abs diff (log-prob) | KL (nats) | top-1 source | top-1 export | agree |"
    lines = [head + (" same token ids |" if tokens else ""), "|---|---|---|---|---|---|" + ("---|" if tokens else "")]
    for r in rows:
        agree = "yes" if r["top1_match"] else "NO"
        line = f"| {r['prompt']} | {r['max_abs_diff']:.2e} | {r['kl']:.2e} | {r['top1_source']} | {r['top1_export']} | "
        lines.append(line + f"{agree} |" + ((" yes |" if r["same_tokens"] else " NO |") if tokens else ""))
    worst = max((r["max_abs_diff"] for r in rows), default=0.0)
    worst_kl = max((r["kl"] for r in rows), default=0.0)
    agree_all = sum(r["top1_match"] for r in rows) / max(len(rows), 1)
    last = f"| **all** | **{worst:.2e}** | **{worst_kl:.2e}** | | | **{agree_all:.0%}** |"
    if tokens:
        last += f" **{sum(r['same_tokens'] for r in rows)}/{len(rows)}** |"
    lines.append(last)
    return "\n".join(lines)


def llama_cpp_rows(
    source: list[torch.Tensor], prompts: list[list[int]], tokenizer: Any, gguf: Path, lora: Path | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(what ran, compare() rows + same_tokens) for `gguf` (+ GGUF adapter `lora`) run in llama.cpp."""
    what = f"{gguf.name}" + (f" + adapter {lora.name}" if lora is not None else "")
    log.info("reloading %s in llama.cpp (llama-cpp-python %s, own process)", what, llamacpp.version())
    texts = [tokenizer.decode(p, skip_special_tokens=False, clean_up_tokenization_spaces=False) for p in prompts]
    logprobs, same_tokens = llamacpp.score_in_child(gguf, lora, prompts, texts)  # a crash there is an exception here
    rows = compare(source, logprobs)
    for row, same in zip(rows, same_tokens, strict=True):
        row["same_tokens"] = same
    if not all(r["top1_match"] for r in rows):
        log.warning("%s in llama.cpp: the top-1 token differs from the source on some prompts (verify.md)", what)
    return f"{what} in llama.cpp (llama-cpp-python {llamacpp.version()})", rows
