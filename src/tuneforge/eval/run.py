"""`tuneforge eval`: read every task's data, then evaluate each model on every task, then write the report.

Everything that can fail on user input (paths, layouts, settings that do not apply, unknown subjects, run
folders, model folders) fails before the first model loads. Models are evaluated one after the other, so
only one is in memory at a time; items, few-shot examples and resamples are drawn once from `eval.seed`, so
every model sees the same questions and the same seed gives the same numbers.

With several processes (`tuneforge eval CONFIG --nproc N`, or any launcher: docs/scale.md) every rank loads the
model and answers a strided shard of each task's requests; the answers are gathered (all_gather_object) and
scored in item order, and rank 0 writes the one report, the same as one process writes (greedy decoding and
log-likelihoods do not depend on which process computes them); `evaluate` returns that report on every rank.
"""

from __future__ import annotations

import difflib
import gc
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.config import ModelConfig, RunConfig, TaskSpec
from tuneforge.distributed.env import World
from tuneforge.distributed.group import barrier, gather_all, init_world
from tuneforge.eval.lm import LM
from tuneforge.eval.perturb import perturb_examples
from tuneforge.eval.prompts import Item
from tuneforge.eval.readers import SPLIT_ARCHIVES, EvalError, Example, read_split
from tuneforge.eval.report import EvalReport, TaskResult, build_report, write_report
from tuneforge.eval.tasks import TASK_TYPES, Request, Response, Task, build_task, check_spec
from tuneforge.runs import RunDir
from tuneforge.utils.names import did_you_mean

log = logging.getLogger("tuneforge.eval")

SPLIT_NAMES = ("test", "train", "dev", "val", "validation", "valid")
FEWSHOT_SPLITS = ("dev", "train", "val", "validation", "valid")


@dataclass(frozen=True)
class LoadedTask:
    name: str
    task: Task
    items: list[Item]


@dataclass(frozen=True)
class ModelRef:
    label: str
    model: ModelConfig
    adapter: Path | None = None
    tool_format: str = "auto"  # how prompts show tools: the run's data.tool_format (runs.RunDir.tool_format)


def _local_path(spec: TaskSpec, where: str) -> Path:
    path = Path(spec.path).expanduser()
    if path.exists():
        return path
    hub = bool(re.fullmatch(r"[\w.-]+/[\w.-]+", spec.path)) and not spec.path.startswith(".")
    hint = (
        " It looks like a Hugging Face hub id: tuneforge evaluates from local files only and does not download "
        f"data sets (there may be no network). Download it once and set path to the local copy in the "
        f"{spec.format!r} layout."
        if hub
        else ""
    )
    raise EvalError(f"{where}.path={spec.path!r}: no such file or folder.{hint}")


def task_name(spec: TaskSpec) -> str:
    if spec.name:
        return spec.name
    path = Path(spec.path)
    stem = path.stem if path.suffix else path.name
    if path.suffix and any(stem.lower() == s or stem.lower().startswith(f"{s}_") for s in SPLIT_NAMES):
        stem = path.parent.name  # ARC-Easy/test.json -> ARC-Easy, csqa/dev_rand_split.jsonl -> csqa
    noise = f"+noise{spec.perturb.char_noise:g}" if spec.perturb else ""  # beside its clean twin
    return stem + (f"[{','.join(spec.subjects)}]" if spec.subjects else "") + noise


def _pick_subjects(examples: list[Example], spec: TaskSpec, where: str) -> list[Example]:
    if not spec.subjects:
        return examples
    known = sorted({e.subject for e in examples if e.subject})
    for s in spec.subjects:
        if s not in known:
            close = difflib.get_close_matches(s, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
            raise EvalError(f"{where}.subjects: {s!r} is not a subject of {spec.path}{hint}")
    return [e for e in examples if e.subject in spec.subjects]


def _shot_pool(spec: TaskSpec, path: Path, where: str) -> list[Example]:
    if spec.format not in SPLIT_ARCHIVES and not path.is_dir():
        raise EvalError(
            f"{where}.fewshot={spec.fewshot} needs shots from another split, but path is one file; point path at "
            "the folder holding the split files (e.g. test.json and train.json)"
        )
    names = [spec.fewshot_split] if spec.fewshot_split else [s for s in FEWSHOT_SPLITS if s != spec.split]
    if spec.fewshot_split == spec.split:
        raise EvalError(f"{where}.fewshot_split={spec.split!r} is the evaluated split; shots would leak answers")
    for name in names:
        try:
            pool = read_split(spec.format, path, name)
        except EvalError:
            continue
        if pool:
            return pool
    raise EvalError(f"{where}: no split {' or '.join(map(repr, names))} for few-shot examples in {path}")


def _draw_shots(example: Example, pool: list[Example], k: int, seed: int) -> tuple[Example, ...]:
    same = [e for e in pool if example.subject and e.subject == example.subject]  # MMLU: same-subject shots
    candidates = same if len(same) >= k else pool
    return tuple(random.Random(f"{seed}:{example.id}").sample(candidates, min(k, len(candidates))))


def load_tasks(cfg: RunConfig) -> list[LoadedTask]:
    """Read, filter, sample and check every task's data; nothing loads a model here."""
    ev, out, names = cfg.eval, [], set()
    if not ev.tasks:
        raise EvalError("eval.tasks is empty: list at least one task (see examples/eval_*.yaml)")
    for i, spec in enumerate(ev.tasks):
        where = f"eval.tasks[{i}]"
        name = task_name(spec)
        if name in names:
            raise EvalError(f"{where}: a second task is named {name!r}; give each task its own `name`")
        names.add(name)
        check_spec(spec, where)
        if spec.input_style is None and "input_style" in TASK_TYPES[spec.type].settings:
            # the code-review types: the layout this config's data was prepared in (tuneforge.data.code_review)
            spec = spec.model_copy(update={"input_style": cfg.prepare.input_style})
        path = _local_path(spec, where)
        examples = _pick_subjects(read_split(spec.format, path, spec.split), spec, where)
        if not examples:
            raise EvalError(f"{where}: {spec.path} (split {spec.split!r}) holds no items")
        task = build_task(spec, examples, where)  # all items: labels and checks must not depend on `limit`
        limit = spec.limit or ev.limit
        if limit and limit < len(examples):
            keep = sorted(random.Random(ev.seed).sample(range(len(examples)), limit))
            examples = [examples[k] for k in keep]
        if spec.perturb:
            examples, rate = perturb_examples(examples, spec.perturb)
            log.info(
                "task %s: %.1f%% of the questions' letters edited (char_noise %g)",
                name,
                100 * rate,
                spec.perturb.char_noise,
            )
        pool = _shot_pool(spec, path, where) if spec.fewshot else []
        items = [Item(e, _draw_shots(e, pool, spec.fewshot, ev.seed) if pool else ()) for e in examples]
        out.append(LoadedTask(name, task, items))
        log.info("task %s: %d items (%s, %s)", name, len(items), spec.type, spec.format)
    return out


def resolve_models(cfg: RunConfig, runs: Sequence[str | Path] = ()) -> list[ModelRef]:
    """Base model first (the reference of every comparison), then each run's trained output; each model's
    folder checked (a missing one fails now, not after the first model's tasks)."""
    from tuneforge.models.loader import resolve_model_path

    refs = model_refs(cfg, runs)
    for r in refs:
        resolve_model_path(r.model)
    return refs


def model_refs(cfg: RunConfig, runs: Sequence[str | Path] = ()) -> list[ModelRef]:
    """The models an evaluation scores, labelled as its report names them, and eval.contrasts checked against
    those labels; nothing is loaded or converted."""
    from tuneforge.runs import model_config_of_run

    run_dirs = list(dict.fromkeys(Path(r) for r in (*cfg.eval.runs, *runs)))  # each run once
    if not run_dirs and RunDir(cfg.run_dir).trained_output() is not None:
        run_dirs = [cfg.run_dir]  # the eval section of a training config, right after training
    tuned = []
    for run in run_dirs:
        model_cfg, output = model_config_of_run(run)
        tuned.append(ModelRef(run.name, model_cfg, output, RunDir(run).tool_format()))
    refs = []
    if cfg.eval.base:
        # An explicit `model:` section names the base; otherwise the base the (first) run was trained from.
        base = cfg.model if "model" in cfg.model_fields_set or not tuned else tuned[0].model
        refs.append(ModelRef("base", base))
    refs += tuned
    if not refs:
        raise EvalError("nothing to evaluate: eval.base=false and no run given (eval.runs or --run)")
    labels = [r.label for r in refs]
    if len(set(labels)) < len(labels):
        refs = [
            ModelRef(str(r.adapter.parent) if r.adapter else r.label, r.model, r.adapter, r.tool_format) for r in refs
        ]
    check_contrasts(cfg.eval.contrasts, [r.label for r in refs])
    return refs


def check_contrasts(contrasts: Sequence[tuple[str, str]], labels: Sequence[str]) -> None:
    """Every eval.contrasts pair names two different evaluated models, by label; checked before any scoring."""
    for i, pair in enumerate(contrasts):
        for name in pair:
            if name not in labels:
                raise EvalError(
                    f"eval.contrasts[{i}] = {list(pair)}: {name!r} is not an evaluated model"
                    f"{did_you_mean(name, labels)}; the models are {', '.join(labels)}"
                )
        if pair[0] == pair[1]:
            raise EvalError(f"eval.contrasts[{i}] = {list(pair)}: a model minus itself is 0; name two models")


def output_folder(cfg: RunConfig, models: Sequence[ModelRef]) -> Path:
    if cfg.eval.output_dir:
        return Path(cfg.eval.output_dir)
    tuned = [m for m in models if m.adapter is not None]
    if tuned and tuned[0].adapter is not None:
        return RunDir(tuned[0].adapter.parent).eval / cfg.name
    return RunDir(cfg.run_dir).eval


def answer(lm: LM, requests: Sequence[Request], desc: str, max_new_tokens: int) -> list[Response]:
    """The model's responses to `requests`, in their order: log-likelihoods and generations, each batched."""
    pairs = [p for r in requests for p in r.pairs]
    scores = lm.loglikelihoods(pairs, desc) if pairs else []
    prompts = [r.prompt for r in requests if r.prompt is not None]
    texts = iter(lm.generate(prompts, max_new_tokens, desc) if prompts else [])
    responses, at = [], 0
    for r in requests:
        responses.append(Response(tuple(scores[at : at + len(r.pairs)]), next(texts) if r.prompt else ""))
        at += len(r.pairs)
    return responses


def run_task(lm: LM, loaded: LoadedTask, label: str, world: World | None = None) -> TaskResult:
    """One model on one task. With several processes each rank answers requests rank, rank + N, ...; the
    answers are gathered on every rank, put back in order and scored there (the same numbers on each: scoring is
    deterministic, its resamples seeded), so every rank holds the result and rank 0 writes it."""
    world = world or World()
    start = time.perf_counter()
    task = loaded.task
    requests: list[Request] = task.prepare(loaded.items, lm)  # cheap (prompts and token ids): every rank, all
    mine = list(range(world.rank, len(requests), world.world_size))
    answers = answer(lm, [requests[i] for i in mine], f"{label} {loaded.name}", task.max_new_tokens)
    responses: list[Response | None] = [None] * len(requests)
    for indices, part in gather_all(world, (mine, answers)):
        for i, response in zip(indices, part, strict=True):
            responses[i] = response
    missing = [i for i, r in enumerate(responses) if r is None]
    if missing:
        raise RuntimeError(f"task {loaded.name}: no rank answered requests {missing[:5]}")
    scored = task.score(loaded.items, [r for r in responses if r is not None])
    return TaskResult(loaded.name, label, len(loaded.items), time.perf_counter() - start, scored)


def evaluate(
    cfg: RunConfig,
    runs: Sequence[str | Path] = (),
    output_dir: str | Path | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate the base model and/or runs on `cfg.eval.tasks`; write report.md/.json/.png; return the report."""
    from tuneforge.inference import LocalEngine

    world = init_world()  # the process group, when a launcher started several processes
    if world.distributed:
        if not world.is_main:
            logging.getLogger("tuneforge").setLevel(logging.WARNING)  # one copy of the progress lines: rank 0's
            progress = False
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_world_size))  # cores shared
        log.info("evaluating on %d processes: each answers a shard of every task", world.world_size)
    tasks = load_tasks(cfg)
    models = resolve_models(cfg, runs)
    out = Path(output_dir) if output_dir else output_folder(cfg, models)
    results: list[TaskResult] = []
    for ref in models:
        log.info("evaluating %s (%s%s)", ref.label, ref.model.path, f" + {ref.adapter}" if ref.adapter else "")
        engine = LocalEngine(ref.model, ref.adapter)
        lm = LM(engine.model, engine.tokenizer, cfg.eval.batch_size, progress, ref.tool_format)
        for loaded in tasks:
            torch.manual_seed(cfg.eval.seed)
            result = run_task(lm, loaded, ref.label, world)
            main = result.scores.metrics[loaded.task.primary].value()
            log.info(
                "%s | %s: %s = %.4f (%d items, %.1f s)",
                ref.label,
                loaded.name,
                loaded.task.primary,
                main,
                result.n,
                result.seconds,
            )
            results.append(result)
            if ref is models[-1]:  # every model has reached this task: refresh the report (a long run keeps it)
                done = [(t.name, t.task) for t in tasks[: tasks.index(loaded) + 1]]
                report = build_report(cfg, done, models, results)
                if world.is_main:  # rank 0 alone writes the report
                    write_report(report, out)
        del engine, lm
        gc.collect()
    barrier()  # the other ranks leave once the report is on disk
    log.info("report written to %s", out)
    return report


__all__ = [
    "LoadedTask",
    "ModelRef",
    "check_contrasts",
    "evaluate",
    "load_tasks",
    "model_refs",
    "output_folder",
    "resolve_models",
    "run_task",
]
