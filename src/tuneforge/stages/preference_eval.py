"""Held-out preference figures of the preference stages (rm, dpo, kto), before and after training.

Every held-out pair (`data.test_datasets`, else the validation split) is rendered twice with data/render.py,
as prompt + chosen and prompt + rejected: the chat-template rendering SFT trains on and chat generates with
(TRL's trainers apply the same template). A pair is then scored by the stage's own model:
- rm: the reward head's score of each whole conversation (before = the freshly initialised head);
- dpo, kto: the policy's summed log-prob of each answer's tokens (through its end-of-turn token). The
  reference of both is the starting model (LoRA's zero-initialised adapter, or a frozen copy), so the
  implicit reward beta * ((logp_c - ref_c) - (logp_r - ref_r)) uses the scores from before training as the
  reference scores; before training it is 0 by construction.
Figures: accuracy (chosen scored above rejected), mean margin, mean chosen and rejected scores.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset

from tuneforge.config import RunConfig
from tuneforge.data.preference import build_test_pairs
from tuneforge.data.render import IGNORE_INDEX, Rendered, render_conversation
from tuneforge.data.schema import Conversation, DataError, Message

log = logging.getLogger("tuneforge.train")
Kind = Literal["logprob", "reward"]  # what a pair's answers are scored by
FILE = "preference_eval.json"


@dataclass(frozen=True)
class HeldOutPairs:
    chosen: list[Rendered]  # prompt + chosen answer, labels on the answer
    rejected: list[Rendered]
    skipped: int  # pairs whose answer lies wholly beyond data.cutoff_len
    source: str  # where the pairs come from, for the report


def held_out_pairs(cfg: RunConfig, tokenizer: Any, val: Dataset | None) -> HeldOutPairs | None:
    """`data.test_datasets` if set, else the validation split (pairs), rendered; None when there is neither."""
    test = build_test_pairs(cfg.data)
    if test is not None:
        pairs, source = test, "data.test_datasets"
    elif val is not None:
        pairs, source = val, "validation split"
    else:
        return None
    held = render_pairs(tokenizer, pairs, cfg.data.cutoff_len, source)
    if not held.chosen:
        raise DataError(
            f"every held-out pair ({source}) loses its answers to data.cutoff_len={cfg.data.cutoff_len}; "
            "raise data.cutoff_len"
        )
    log.info("held-out preference: %d pairs (%s), scored before and after training", len(held.chosen), source)
    return held


def measure(model: Any, pairs: HeldOutPairs, kind: Kind, cfg: RunConfig, tokenizer: Any) -> dict[str, list[float]]:
    """Scores of every held-out pair under `model`, batched like training (train.batch_size pairs a pass)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return score_pairs(model, pairs, kind, cfg.train.batch_size, pad_id)


def render_pairs(tokenizer: Any, pairs: Dataset, cutoff_len: int, source: str) -> HeldOutPairs:
    """The conversational rows of build_preference (prompt/chosen/rejected message lists), rendered."""
    chosen: list[Rendered] = []
    rejected: list[Rendered] = []
    for i, row in enumerate(pairs):
        prompt = tuple(Message(m["role"], m["content"]) for m in row["prompt"])
        two = [
            render_conversation(
                tokenizer,
                Conversation((*prompt, Message("assistant", row[k][-1]["content"])), source=f"{source}#{i}"),
                cutoff_len,
            )
            for k in ("chosen", "rejected")
        ]
        if two[0] is not None and two[1] is not None:
            chosen.append(two[0])
            rejected.append(two[1])
    return HeldOutPairs(chosen, rejected, len(pairs) - len(chosen), source)


@torch.no_grad()
def score(model: Any, rendered: list[Rendered], kind: Kind, batch_size: int, pad_id: int) -> list[float]:
    """One score per sequence: the summed log-prob of its labelled tokens, or the reward head's output."""
    was_training = model.training
    model.eval()  # no dropout
    device = next(model.parameters()).device
    out: list[float] = []
    try:
        for start in range(0, len(rendered), batch_size):
            ids, mask, labels = _pad(rendered[start : start + batch_size], pad_id)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            if kind == "reward":
                out += logits[:, 0].tolist()
            else:
                out += answer_logprobs(logits[:, -ids.size(1) :], labels).tolist()  # prompt-learning PEFT
                # prepends virtual tokens to the outputs: keep the positions of the real ones
    finally:
        model.train(was_training)
    return out


def answer_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sequence, the sum of log p(token | tokens before it) over the labelled tokens."""
    targets = labels[:, 1:]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != IGNORE_INDEX)).sum(dim=-1)


def score_pairs(model: Any, pairs: HeldOutPairs, kind: Kind, batch_size: int, pad_id: int) -> dict[str, list[float]]:
    return {
        "chosen": score(model, pairs.chosen, kind, batch_size, pad_id),
        "rejected": score(model, pairs.rejected, kind, batch_size, pad_id),
    }


def figures(scores: dict[str, list[float]]) -> dict[str, float]:
    c, r = scores["chosen"], scores["rejected"]
    n = len(c)
    return {
        "accuracy": round(sum(x > y for x, y in zip(c, r, strict=True)) / n, 4),
        "margin": round(sum(x - y for x, y in zip(c, r, strict=True)) / n, 4),
        "mean_chosen": round(sum(c) / n, 4),
        "mean_rejected": round(sum(r) / n, 4),
    }


def implicit_reward(before: dict[str, list[float]], after: dict[str, list[float]], beta: float) -> dict[str, float]:
    """beta * ((logp_c - ref_c) - (logp_r - ref_r)) with the starting model (= the reference) as ref."""
    deltas = [
        beta * ((ac - bc) - (ar - br))
        for ac, bc, ar, br in zip(after["chosen"], before["chosen"], after["rejected"], before["rejected"], strict=True)
    ]
    return {
        "reward_margin": round(sum(deltas) / len(deltas), 4),
        "reward_accuracy": round(sum(d > 0 for d in deltas) / len(deltas), 4),
    }


def report(
    run_root: Path,
    pairs: HeldOutPairs,
    kind: Kind,
    before: dict[str, list[float]],
    after: dict[str, list[float]],
    beta: float | None = None,
) -> dict[str, Any]:
    """Write preference_eval.json and log the before -> after line; returns what was written."""
    first, last = figures(before), figures(after)
    if beta is not None:
        first.update(reward_margin=0.0, reward_accuracy=0.0)  # policy == reference before training
        last.update(implicit_reward(before, after, beta))
    what = "reward head score" if kind == "reward" else "summed answer log-prob"
    result: dict[str, Any] = {
        "source": pairs.source,
        "pairs": len(pairs.chosen),
        "skipped_beyond_cutoff": pairs.skipped,
        "score": what,
        **({"beta": beta} if beta is not None else {}),
        "before": first,
        "after": last,
    }
    (run_root / FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
    line = (
        f"held-out preference ({len(pairs.chosen)} pairs, {pairs.source}, {what}): accuracy {first['accuracy']:.3f} "
        f"-> {last['accuracy']:.3f}, margin {first['margin']:.3f} -> {last['margin']:.3f}"
    )
    if beta is not None:
        line += f", implicit reward margin 0 -> {last['reward_margin']:.4f} (beta {beta})"
    log.info(line)
    return result


def _pad(rows: list[Rendered], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right padding: the positions of the real tokens (and the head's last token) stay where they are."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(r.labels)
    return ids, mask, labels
