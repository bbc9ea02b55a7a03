"""The comparison's plan: each arm checked and resolved, each trained arm's run validated, before anything runs.

Every bad arm is named in one error (`compare.arms[2] (lorra): method 'lorra' is not in the method table (did
you mean 'lora'?)`); arms that train the same method on the same set with the same overrides share one run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.compare.forgetting import check_bases, check_general_contrasts, load_general
from tuneforge.compare.leaks import refuse_leaks
from tuneforge.compare.source import CompareError, Prepared, prepare_source
from tuneforge.config import (
    ARM_KINDS,
    ArmKind,
    ArmSpec,
    DataConfig,
    ModelConfig,
    RunConfig,
    SweepConfig,
    arm_run_name,
)
from tuneforge.errors import TuneforgeError
from tuneforge.sweep.plan import Plan, Point, value_overrides
from tuneforge.utils.names import did_you_mean

# Task types whose few-shot answer is the training sample's answer text (generation, worked answers, the cloze
# style's choice text); the others score against labels or letters a training sample does not carry.
FEW_SHOT_TYPES = frozenset({"generation", "math", "multiple_choice"})
# Keys a comparison sets in each trained arm's run itself.
OWN_KEYS = ("name", "output.dir", "output.overwrite", "train.resume")
# What an arm's `overrides` may set: its run's sections (and `stage`); other sections set for one arm would go
# unread (eval.*, rag.*: the comparison answers and retrieves for every arm alike) or are refused to keep one
# rule (dpo.*, privacy.*, ...: set them for the whole comparison).
RUN_SECTIONS = ("model", "data", "method", "train")
# eval keys of `tuneforge eval` that a comparison does not read: key -> what the comparison does instead.
UNREAD_KEYS = {
    "eval.base": "every arm is answered; zero_shot is the base model",
    "eval.runs": "the runs compared are the trained arms' (compare.arms)",
    "eval.output_dir": "the comparison writes to compare.out",
}


@dataclass(frozen=True)
class Arm:
    index: int  # its place in compare.arms
    spec: ArmSpec
    run: str | None  # the trained run it answers with (None: the base model)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def kind(self) -> ArmKind:
        return ARM_KINDS[self.spec.kind]

    @property
    def context(self) -> str:
        """What its prompt holds besides the question: plain, rag, or few_shot-<select>-k<k> (a prompts/ file)."""
        if self.kind.prompt == "few_shot":
            return f"few_shot-{self.spec.select}-k{self.spec.k}"
        return self.kind.prompt


@dataclass(frozen=True)
class ComparePlan:
    cfg: RunConfig
    out: Path
    source: Prepared
    arms: list[Arm]
    training: Plan  # the trained arms' runs, as sweep points (one process each, resumable: tuneforge.sweep)
    identity: dict[str, Any]  # what makes two comparisons share their folder (the config but arms and output)
    general: RunConfig | None = None  # compare.forgetting's eval config, loaded and checked

    def run_of(self, arm: Arm) -> Point | None:
        return next((p for p in self.training.points if p.name == arm.run), None)


def plan_compare(cfg: RunConfig) -> ComparePlan:
    """Resolve and check every arm; raise one CompareError naming each bad one."""
    c = cfg.compare
    if not c.arms:
        raise CompareError("compare.arms is empty: list the arms to compare (kinds: " + ", ".join(ARM_KINDS) + ")")
    _refuse_own(cfg)
    general = load_general(cfg)  # a bad compare.forgetting before the source writes anything
    out = compare_out(cfg)
    source = prepare_source(cfg, out)
    arms, errors, points = [], [], {}
    bases: dict[str, ModelConfig] = {}  # each trained run's base model (one forgetting report: one base)
    datas: list[tuple[str, DataConfig]] = [("", cfg.data)]  # what the arms learn from: the leak check's input
    for i, spec in enumerate(c.arms):
        where = f"compare.arms[{i}] ({spec.label})"
        try:
            run = _check_arm(cfg, spec, source, where)
            if run is not None and run not in points:
                points[run], run_cfg = _run_point(cfg, spec, source, run, out)
                datas.append((f"{where}: its run's ", run_cfg.data))
                bases[run] = run_cfg.model
        except TuneforgeError as e:
            errors.append(str(e) if str(e).startswith(where) else f"{where}: {_one_line(str(e))}")
            continue
        arms.append(Arm(i, spec, run))
    if errors:
        raise CompareError(f"{len(errors)} of {len(c.arms)} arms cannot run:\n" + "\n".join(errors))
    check_bases(cfg, bases)
    if general is not None:
        check_general_contrasts(cfg, general, list(points))
    few_shot = any(a.kind.prompt == "few_shot" for a in arms)
    if few_shot or points:  # the training data is read only by few-shot and trained arms
        refuse_leaks(source, datas, few_shot or (cfg.stage == "sft" and any(a.kind.trains for a in arms)))
    settings = SweepConfig(evaluate=False, timeout_s=c.timeout_s)
    training = Plan(cfg, settings, {}, list(points.values()), "train_loss", "min", out, {})
    return ComparePlan(cfg, out, source, arms, training, identity(cfg), general)


def compare_out(cfg: RunConfig) -> Path:
    """compare.out, else <output.dir>/compare-<name>."""
    return Path(cfg.compare.out) if cfg.compare.out else Path(cfg.output.dir) / f"compare-{cfg.name}"


def _check_arm(cfg: RunConfig, spec: ArmSpec, source: Prepared, where: str) -> str | None:
    kind = ARM_KINDS[spec.kind]
    if kind.prompt == "rag":
        if not source.documents:
            raise CompareError(f"{where}: a RAG arm needs documents to retrieve from: set rag.documents")
        missing = [str(d) for d in source.documents if not d.exists()]
        if missing:
            raise CompareError(f"{where}: rag.documents {', '.join(missing)}: no such file or folder")
    if kind.prompt == "few_shot":
        task_type = source.task.task.spec.type
        if task_type not in FEW_SHOT_TYPES or source.task.task.spec.mc_style == "letter":
            raise CompareError(
                f"{where}: few-shot examples from the training split fit {', '.join(sorted(FEW_SHOT_TYPES))} "
                f"(cloze) tasks; eval.tasks[0] is {task_type}"
                + (" with mc_style letter" if task_type == "multiple_choice" else "")
            )
        pool = source.pool()
        if spec.k > len(pool):
            raise CompareError(
                f"{where}: k={spec.k} is larger than the training split ({len(pool)} samples of {source.pool_from})"
            )
    if not kind.trains:
        return None
    _check_method(str(spec.method), where)
    sets = list(source.train_sets)
    if spec.train_on is not None and spec.train_on not in sets:
        raise CompareError(
            f"{where}: train_on={spec.train_on!r} is not a training set of compare.source={cfg.compare.source}; "
            f"allowed: {', '.join(sets)}"
        )
    bad = [k for k in spec.overrides if k in OWN_KEYS or k.split(".")[0] in ("compare", "sweep")]
    if bad:
        raise CompareError(f"{where}: overrides {bad[0]!r}: the comparison sets it itself")
    unread = [k for k in spec.overrides if k != "stage" and k.split(".")[0] not in RUN_SECTIONS]
    if unread:
        raise CompareError(
            f"{where}: overrides {unread[0]!r}: an arm's run reads only "
            f"{', '.join(s + '.*' for s in RUN_SECTIONS)} and stage from its overrides; set other keys for the "
            "whole comparison"
        )
    return arm_run_name(spec, sets[0])


def _check_method(method: str, where: str) -> None:
    from tuneforge.methods import METHOD_PARAMS

    if method not in METHOD_PARAMS:
        hint = did_you_mean(method, METHOD_PARAMS)
        raise CompareError(f"{where}: method {method!r} is not in the method table{hint}; see docs/methods.md")


def _run_point(cfg: RunConfig, spec: ArmSpec, source: Prepared, run: str, out: Path) -> tuple[Point, RunConfig]:
    """The arm's run config, validated as a run (tuneforge.stages.load_config: both tables)."""
    from tuneforge.stages import load_config

    build = source.train_sets[spec.train_on or next(iter(source.train_sets))]
    raw = build(cfg, run, out / "runs")
    same = spec.method == cfg.method.name
    # the config's method section goes to its own method; another method starts from that method's defaults
    raw["method"] = raw.get("method", {}) if same else {"name": spec.method}
    if isinstance(raw["method"], dict):
        raw["method"] = {**raw["method"], "name": spec.method}
    run_cfg = load_config(raw, value_overrides(spec.overrides))
    dump = run_cfg.model_dump(mode="json", exclude_unset=True)
    dump.pop("compare", None)
    return Point(run, dict(spec.overrides), dump), run_cfg


def identity(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config less what may change between reruns of one comparison: the arms (add or drop some),
    the output folder, the timeout, the forgetting report's config (its own inputs.json tells when to redo it)."""
    ident = json.loads(json.dumps(cfg.model_dump(mode="json")))
    for key in ("arms", "out", "timeout_s", "forgetting"):
        ident["compare"].pop(key, None)
    ident.pop("output", None)
    ident.pop("sweep", None)
    return ident


def _refuse_own(cfg: RunConfig) -> None:
    from tuneforge.config import is_set

    for key, instead in UNREAD_KEYS.items():
        if is_set(cfg, key):
            raise CompareError(f"{key} is set, but a comparison does not read it ({instead}); remove {key}")
    if cfg.compare.source != "knowledge" and cfg.lab.model_fields_set:
        key = f"lab.{sorted(cfg.lab.model_fields_set)[0]}"
        raise CompareError(
            f"{key} is set, but compare.source={cfg.compare.source} does not read lab.* (the knowledge source's "
            "world and files); remove it, or set compare.source=knowledge"
        )
    for key in ("output.overwrite", "train.resume"):
        if is_set(cfg, key):
            raise CompareError(
                f"{key} is set: a comparison never replaces a finished arm and resumes a half-finished run by "
                "itself; to start over, delete the compare folder or choose another compare.out"
            )


def _one_line(message: str) -> str:
    lines = [ln.strip(" -") for ln in message.splitlines()]
    if lines and lines[0].endswith("invalid configuration"):
        lines = lines[1:]
    return " ".join(lines).removeprefix("<config>: ")


__all__ = [
    "FEW_SHOT_TYPES",
    "RUN_SECTIONS",
    "UNREAD_KEYS",
    "Arm",
    "ComparePlan",
    "compare_out",
    "identity",
    "plan_compare",
]
