"""The `compare:` section: `tuneforge compare CONFIG`, every way to specialise on one task side by side
(docs/compare.md).

An arm is one way to answer the held-out task: the model as it is (zero-shot), with k solved examples in the
prompt (few-shot, drawn at random or by similarity to the question), with retrieved passages (RAG), a method
of the method table trained as an ordinary run (tuned), or a tuned model with few-shot examples or retrieval.
ARM_KINDS is the one table of arm kinds: whether a kind trains and what its prompt holds; the config checks an
arm's settings against it, `tuneforge.compare` builds the runs and prompts from it. Whether an arm's method is
in the method table and whether its run is a valid run is checked by `tuneforge.compare` (the method table
lives above the config).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.config.sections import Section
from tuneforge.utils.names import did_you_mean

PromptKind = Literal["plain", "few_shot", "rag"]
FewShotSelect = Literal["random", "similar"]


@dataclass(frozen=True, kw_only=True)
class ArmKind:
    trains: bool  # the arm's model is a run trained with `method` (else the base model as it is)
    prompt: PromptKind  # what goes into the prompt besides the question
    summary: str


ARM_KINDS: dict[str, ArmKind] = {
    "zero_shot": ArmKind(trains=False, prompt="plain", summary="the base model, the question alone"),
    "few_shot": ArmKind(
        trains=False, prompt="few_shot", summary="the base model, k solved training examples before the question"
    ),
    "rag": ArmKind(trains=False, prompt="rag", summary="the base model, the top rag.top_k retrieved passages"),
    "tuned": ArmKind(trains=True, prompt="plain", summary="a run of `method` trained on the training split"),
    "tuned_few_shot": ArmKind(trains=True, prompt="few_shot", summary="that run, with k solved examples"),
    "tuned_rag": ArmKind(trains=True, prompt="rag", summary="that run, with retrieved passages"),
}
# compare.source: where the task comes from (tuneforge.compare.source.SOURCES has one row per name).
CompareSource = Literal["task", "knowledge"]
FEW_SHOT_KEYS = ("k", "select")


class ArmSpec(Section):
    """One arm (`compare.arms[i]`): a kind of ARM_KINDS and the settings that kind reads."""

    kind: str = Field(description=f"What the arm is: {', '.join(ARM_KINDS)} (docs/compare.md).")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.+\-]+$",
        description="Label in the table (default: from kind, method, select and k, e.g. lora+few_shot_similar_k4).",
    )
    method: str | None = Field(None, description="Trained kinds: a method of the method table (docs/methods.md).")
    k: int = Field(4, gt=0, description="Few-shot kinds: solved training examples put before each question.")
    select: FewShotSelect = Field(
        "similar",
        description="Few-shot kinds: random (seeded by eval.seed and the item) or similar (the nearest training "
        "questions by retrieval, rag.retriever over the training split).",
    )
    train_on: str | None = Field(
        None,
        description="Trained kinds: the training set of the source (task: train, the default; knowledge: docs, "
        "the default, or paraphrased).",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Trained kinds: keys of this arm's run only (model.*, data.*, method.*, train.*, stage), e.g. "
        "{method.r: 8, train.lr: 3e-2}.",
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in ARM_KINDS:
            raise ValueError(f"unknown arm kind {v!r}{did_you_mean(v, ARM_KINDS)}; allowed: {', '.join(ARM_KINDS)}")
        return v

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> ArmSpec:
        kind = ARM_KINDS[self.kind]
        if kind.trains and not self.method:
            raise ValueError(f"kind {self.kind!r} trains a run: name its method (method: lora)")
        stray: list[str] = [
            k for k in ("method", "train_on", "overrides") if k in self.model_fields_set and not kind.trains
        ]
        stray += [k for k in FEW_SHOT_KEYS if k in self.model_fields_set and kind.prompt != "few_shot"]
        if stray:
            raise ValueError(f"{', '.join(stray)} does not apply to an arm of kind {self.kind!r}")
        return self

    @property
    def label(self) -> str:
        """The arm's name: given, or made from what it is (zero_shot, few_shot_similar_k4, lora+rag)."""
        if self.name:
            return self.name
        kind = ARM_KINDS[self.kind]
        shots = f"few_shot_{self.select}_k{self.k}"
        context = {"plain": "", "few_shot": shots, "rag": "rag"}[kind.prompt]
        if not kind.trains:
            return context or self.kind
        trained = str(self.method) + (f"-{self.train_on}" if self.train_on else "")
        return trained + (f"+{context}" if context else "")


class CompareConfig(Section):
    """`tuneforge compare CONFIG`: every arm on one held-out task, with score, cost and memory (docs/compare.md).

    Shared keys: data.* (the training split: few-shot pool, trained arms' data), eval.tasks (one task: the
    held-out set), eval.limit, eval.seed, eval.bootstrap, eval.batch_size (the scoring), rag.* (the RAG arms'
    documents and index, and the retriever of few-shot `similar`), model.*, method.*, train.* (every trained arm's
    run, an arm's `overrides` on top).
    """

    arms: list[ArmSpec] = Field(default_factory=list, description="The arms compared (kinds: docs/compare.md).")
    source: CompareSource = Field(
        "task",
        description="task: data.datasets is the training split and eval.tasks[0] the held-out task; knowledge: the "
        "knowledge lab's facts (lab.* keys: the fictional world, or lab.docs + lab.questions).",
    )
    out: str | None = Field(None, description="Compare folder (default: <output.dir>/compare-<name>).")
    timeout_s: float | None = Field(
        None, gt=0, description="An arm's training or answering process running longer fails that arm (default: none)."
    )
    forgetting: str | None = Field(
        None,
        description="An eval config of general benchmarks without a model: section (e.g. examples/forgetting.yaml): "
        "after the arms are scored, the forgetting report of the trained arms' runs against the base, a column per "
        "general task in the table (default: none, off).",
    )

    @field_validator("arms")
    @classmethod
    def _unique_labels(cls, v: list[ArmSpec]) -> list[ArmSpec]:
        labels = [a.label for a in v]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"two arms are named {twice[0]!r}; give one of them its own `name`")
        return v


def arm_run_name(arm: ArmSpec, default_train_on: str) -> str:
    """The run a trained arm uses: arms with the same method, training set and overrides share it (lora and
    lora+few_shot_similar_k4 are one training). `train_on` unset and `train_on` set to the source's default
    (`default_train_on`: task's train, knowledge's docs) are one training set, named by its absence."""
    train_on = arm.train_on if arm.train_on not in (None, default_train_on) else None
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(arm.method)) + (f"-{train_on}" if train_on else "")
    if not arm.overrides:
        return base
    digest = hashlib.sha1(json.dumps(arm.overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{base}-{digest}"


__all__ = ["ARM_KINDS", "ArmKind", "ArmSpec", "CompareConfig", "CompareSource", "FewShotSelect", "arm_run_name"]
