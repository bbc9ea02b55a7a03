"""Seeded character noise on evaluation questions (`perturb: {char_noise: 0.05, seed: 0}` in a task).

Robustness to perturbed inputs is the task's score on the noisy questions against its score on the clean ones
(the same items: a task and its perturbed twin draw the same seeded sample). Each letter of the question is
edited with probability `char_noise`, by one of three typist's slips chosen uniformly: swapped with the next
character, deleted, or preceded by an inserted letter (drawn from the question's own letters, so the noise
stays in the text's script). Digits, spaces and punctuation are never edited: a math question keeps its
numbers, so its answer stays right. Answer choices, few-shot examples and instructions are left clean.

The edits depend only on (seed, item id, text): every model sees the same noisy question, and a task's noise
does not change when `limit` draws a different sample. Written by hand: nlpaug and TextAttack do this, but
they are heavy dependencies for a dozen lines and seed through global state.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from tuneforge.config.stage_sections import PerturbSpec
from tuneforge.eval.readers import Example

EDITS = ("swap", "delete", "insert")


def char_noise(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """`text` with each letter edited with probability `rate`; returns the noisy text and the number of edits."""
    letters = [c for c in text if c.isalpha()]
    out: list[str] = []
    edits, i = 0, 0
    while i < len(text):
        c = text[i]
        if not c.isalpha() or rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        edits += 1
        edit = rng.choice(EDITS)
        if edit == "swap" and i + 1 < len(text):
            out += [text[i + 1], c]
            i += 2
            continue
        if edit == "insert" or edit == "swap":  # a swap at the very end inserts instead
            out += [rng.choice(letters), c]
        i += 1  # delete: nothing written
    return "".join(out), edits


def perturb_examples(examples: Sequence[Example], spec: PerturbSpec) -> tuple[list[Example], float]:
    """The examples with noisy questions, and the share of letters edited (the measured noise rate)."""
    out, edits, letters = [], 0, 0
    for ex in examples:
        rng = random.Random(f"{spec.seed}:{ex.id}")
        noisy, n = char_noise(ex.question, spec.char_noise, rng)
        edits += n
        letters += sum(c.isalpha() for c in ex.question)
        out.append(dataclasses.replace(ex, question=noisy, meta={**ex.meta, "clean_question": ex.question}))
    return out, edits / letters if letters else 0.0


__all__ = ["EDITS", "char_noise", "perturb_examples"]
