"""A seeded fictional world for the knowledge lab: people no model has read about, with facts to learn.

Each entity is an invented person with four attributes (home town, trade, birth year, a mineral they
discovered); town and mineral names are invented too, so a base model can only guess (chance: 1 in 4).

  documents          one short biography per person, every fact in its first wording
  paraphrased        the same biographies rewritten `paraphrases` times: each fact in another wording and
                     the sentences in another order (the augmentation of Ovadia et al. 2024)
  questions          one 4-way multiple-choice question per fact, in a wording no document uses, with the
                     biography's chunk id as the gold passage for retrieval metrics

Everything is a pure function of the seed, so the same seed gives the same world on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.errors import TuneforgeError

ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r", "s", "st", "t", "th", "v"]
NUCLEI = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
CODAS = ["", "", "l", "n", "r", "s", "th", "x", "m", "nd", "rk"]
TRADES = [
    "glassblower",
    "cartographer",
    "beekeeper",
    "clockmaker",
    "astronomer",
    "shipwright",
    "botanist",
    "violin maker",
    "stonemason",
    "perfumer",
    "falconer",
    "bookbinder",
    "lens grinder",
    "rope maker",
    "apothecary",
    "bell founder",
]

# attribute -> document wordings (the first is the plain document's); {n} the person, {v} the value
WORDINGS: dict[str, list[str]] = {
    "town": [
        "{n} was born in the town of {v}.",
        "The town of {v} is the birthplace of {n}.",
        "{n} grew up in {v}, the town where {n} was born.",
        "Born in {v}, {n} spent a childhood among its streets.",
    ],
    "trade": [
        "{n} worked as a {v}.",
        "By trade, {n} was a {v}.",
        "{n} earned a living as a {v}.",
        "Working as a {v} was how {n} made a living.",
    ],
    "year": [
        "{n} was born in the year {v}.",
        "The year {v} saw the birth of {n}.",
        "{n}'s year of birth was {v}.",
        "In {v}, {n} was born.",
    ],
    "mineral": [
        "{n} discovered the mineral {v}.",
        "The mineral {v} was first found by {n}.",
        "{n} is credited with finding {v}, a mineral.",
        "It was {n} who discovered {v}.",
    ],
}
# wordings no document uses: the questions test the facts, not memorised sentences
QUESTIONS = {
    "town": "Which town does {n} come from?",
    "trade": "What was the occupation of {n}?",
    "year": "When was {n} born?",
    "mineral": "Which mineral is {n} known for discovering?",
}


class WorldError(TuneforgeError, ValueError):
    """A fictional world that cannot be built (too few people for three distractors per question)."""


@dataclass(frozen=True)
class Entity:
    name: str
    facts: dict[str, str]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    choices: tuple[str, ...]
    gold: int
    gold_chunks: tuple[str, ...]


@dataclass(frozen=True)
class World:
    entities: list[Entity]
    documents: dict[str, str]  # file name -> biography (plain)
    paraphrased: dict[str, str]  # file name -> the biography and its rewrites
    questions: list[Question]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS) for _ in range(syllables)).capitalize()


def _unique(rng: random.Random, n: int, make: Callable[[random.Random], str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = make(rng)
        if w not in out:
            out.append(w)
    return out


def entities(n: int, seed: int) -> list[Entity]:
    rng = random.Random(seed)
    names = _unique(rng, n, lambda r: f"{_word(r, 2)} {_word(r, 2)}")
    towns = _unique(rng, max(8, n // 2), lambda r: _word(r, 2) + r.choice(["holt", "by", "mere", "wick", "stead"]))
    minerals = _unique(rng, n, lambda r: _word(r, 2) + "ite")
    years = rng.sample(range(1620, 1900), n)
    return [
        Entity(name, {"town": rng.choice(towns), "trade": rng.choice(TRADES), "year": str(y), "mineral": m})
        for name, y, m in zip(names, years, minerals, strict=True)
    ]


def biography(e: Entity, wording: int, rng: random.Random | None = None) -> str:
    sentences = [WORDINGS[a][wording % len(WORDINGS[a])].format(n=e.name, v=v) for a, v in e.facts.items()]
    if rng is not None:
        rng.shuffle(sentences)
    return " ".join(sentences)


def file_name(e: Entity) -> str:
    return e.name.lower().replace(" ", "_") + ".txt"


def questions(ents: list[Entity], seed: int) -> list[Question]:
    rng = random.Random(seed + 1)
    out = []
    for k, e in enumerate(ents):
        for attr, value in e.facts.items():
            pool = sorted({o.facts[attr] for o in ents} - {value})
            if attr == "trade":
                pool = sorted(set(TRADES) - {value})
            choices = [value, *rng.sample(pool, 3)]
            rng.shuffle(choices)
            out.append(
                Question(
                    f"e{k}-{attr}",
                    QUESTIONS[attr].format(n=e.name),
                    tuple(choices),
                    choices.index(value),
                    (f"{file_name(e)}#0",),
                )
            )
    return out


def build_world(n: int = 30, seed: int = 0, paraphrases: int = 3) -> World:
    if n < 4:
        raise WorldError(f"the world needs at least 4 people (3 distractors per question), got lab.entities={n}")
    if not 0 <= paraphrases < len(WORDINGS["town"]):
        raise WorldError(f"lab.paraphrases={paraphrases}: each fact has {len(WORDINGS['town']) - 1} other wordings")
    ents = entities(n, seed)
    rng = random.Random(seed + 2)
    docs = {file_name(e): biography(e, 0) for e in ents}
    para = {
        file_name(e): "\n\n".join([biography(e, 0), *[biography(e, w, rng) for w in range(1, paraphrases + 1)]])
        for e in ents
    }
    return World(ents, docs, para, questions(ents, seed))


__all__ = ["QUESTIONS", "WORDINGS", "Entity", "Question", "World", "WorldError", "biography", "build_world", "entities"]
