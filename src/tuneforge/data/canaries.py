"""Canaries: random secrets inserted into a training split, to measure how much a model memorises (data.canaries).

The method is The Secret Sharer's (Carlini et al., 2019, "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks", USENIX Security, https://arxiv.org/abs/1802.08232): a sentence with a random
secret from a fixed space R (here the 10^digits digit strings) is inserted k times into the training data; after
training, the secret is ranked among the candidates of R by the model's log-perplexity (tuneforge.audit.canary).

This module owns the canary sample (the same function builds the inserted copies and the candidates the audit
scores) and the record a run keeps of them (canaries.json, `RunDir.canaries`), so the two never disagree. The
copies go into the training split only, after the validation split is made, at seeded positions: the real samples
and their order are the same with and without canaries.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tuneforge.config import CanaryConfig, DataConfig
from tuneforge.data.render import Rendered
from tuneforge.data.schema import Conversation, DataError, Message, Sample, Text

log = logging.getLogger("tuneforge.data")

Kind = Literal["chat", "text"]  # what the canaries are: chat samples (prompt, answer) or plain text
KINDS: tuple[str, ...] = ("chat", "text")
SOURCE = "data.canaries"  # the `source` of a canary sample, named in any error about it


@dataclass(frozen=True)
class Canary:
    secret: str
    repeats: int  # copies in the training split; 0: a reference canary, never inserted
    text: str


@dataclass(frozen=True)
class CanaryRecord:
    """What a run inserted: canaries.json, written by the stage and read back by the audit."""

    kind: Kind
    format: str
    prompt: str
    digits: int
    seed: int
    canaries: tuple[Canary, ...]

    @property
    def space(self) -> int:
        """|R|: the number of candidate secrets."""
        return int(10**self.digits)

    @property
    def inserted(self) -> list[Canary]:
        return [c for c in self.canaries if c.repeats > 0]

    @property
    def references(self) -> list[Canary]:
        return [c for c in self.canaries if c.repeats == 0]

    def secret(self, value: int) -> str:
        """Candidate number `value` of R as a secret: zero-padded to `digits`."""
        return f"{value:0{self.digits}d}"

    def text(self, secret: str) -> str:
        return fill(self.format, secret)

    def sample(self, secret: str) -> Sample:
        """The training sample of `secret`: a chat turn answered with the canary sentence (sft), or the sentence."""
        if self.kind == "text":
            return Text(self.text(secret), source=SOURCE)
        return Conversation((Message("user", self.prompt), Message("assistant", self.text(secret))), source=SOURCE)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format": self.format,
            "prompt": self.prompt,
            "digits": self.digits,
            "space": self.space,
            "seed": self.seed,
            "inserted_samples": sum(c.repeats for c in self.canaries),
            "canaries": [{"secret": c.secret, "repeats": c.repeats, "text": c.text} for c in self.canaries],
        }

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> CanaryRecord:
        """A record read back (canaries.json); anything malformed is a DataError naming the file and key."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected a JSON object with the canaries, got {type(data).__name__}")
        try:
            kind, fmt, prompt = data["kind"], data["format"], data["prompt"]
            digits, seed, rows = int(data["digits"]), int(data["seed"]), data["canaries"]
            canaries = tuple(Canary(str(r["secret"]), int(r["repeats"]), str(r["text"])) for r in rows)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: not a canary record ({type(e).__name__}: {e})") from None
        if kind not in KINDS:
            raise DataError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        record = cls(kind, str(fmt), str(prompt), digits, seed, canaries)
        for c in canaries:
            if len(c.secret) != digits or not c.secret.isdigit() or c.text != record.text(c.secret):
                raise DataError(f"{where}: canary {c.secret!r} does not match format {fmt!r} with {digits} digits")
        return record


def fill(fmt: str, secret: str) -> str:
    """The canary sentence: `fmt` with its one {secret} replaced (replace, not str.format: braces in the
    sentence stay as they are)."""
    return fmt.replace("{secret}", secret)


def draw(cfg: CanaryConfig, kind: Kind) -> CanaryRecord:
    """The canaries of `cfg`: distinct seeded secrets, `count` per entry of `repeats`, then the references."""
    n_inserted = cfg.count * len(cfg.repeats)
    values = random.Random(f"{cfg.seed}/canaries").sample(range(10**cfg.digits), n_inserted + cfg.references)
    repeats = [r for r in cfg.repeats for _ in range(cfg.count)] + [0] * cfg.references
    secrets = [f"{v:0{cfg.digits}d}" for v in values]
    canaries = tuple(Canary(s, r, fill(cfg.format, s)) for s, r in zip(secrets, repeats, strict=True))
    return CanaryRecord(kind, cfg.format, cfg.prompt, cfg.digits, cfg.seed, canaries)


def insert_canaries(
    train: list[Rendered], cfg: DataConfig, kind: Kind, render: Callable[[Sample], Rendered | None]
) -> tuple[list[Rendered], CanaryRecord | None]:
    """The training split with every canary's copies at seeded positions (the other samples keep their order),
    and the record of what went in; unchanged (and None) without data.canaries."""
    if cfg.canaries is None:
        return train, None
    record = draw(cfg.canaries, kind)
    copies: list[Rendered] = []
    for canary in record.inserted:
        rendered = render(record.sample(canary.secret))
        if rendered is None or rendered.truncated:
            raise DataError(
                f"{SOURCE}: the canary {canary.text!r} does not fit data.cutoff_len={cfg.cutoff_len}; "
                "shorten data.canaries.format (or .prompt) or raise data.cutoff_len"
            )
        copies += [rendered] * canary.repeats
    rng = random.Random(f"{cfg.canaries.seed}/canary-positions")
    rng.shuffle(copies)
    before: dict[int, list[Rendered]] = {}  # real sample index -> the copies that go in front of it
    for slot, copy in zip(rng.choices(range(len(train) + 1), k=len(copies)), copies, strict=True):
        before.setdefault(slot, []).append(copy)
    out: list[Rendered] = []
    for i in range(len(train) + 1):
        out += before.get(i, [])
        if i < len(train):
            out.append(train[i])
    log.info(
        "data.canaries: %d canaries inserted %s times (%d samples in the training split), %d never inserted; "
        "recorded in the run folder",
        len(record.inserted),
        "/".join(str(r) for r in cfg.canaries.repeats),
        len(copies),
        len(record.references),
    )
    return out, record


def refuse_canaries(cfg: DataConfig, what: str) -> None:
    """data.canaries applies to chat (sft) and text (pt) data only."""
    if cfg.canaries is not None:
        raise DataError(
            f"data.canaries inserts chat samples (stage sft) or text (stage pt); {what} takes none: "
            "remove data.canaries"
        )


__all__ = ["KINDS", "SOURCE", "Canary", "CanaryRecord", "Kind", "draw", "fill", "insert_canaries", "refuse_canaries"]
