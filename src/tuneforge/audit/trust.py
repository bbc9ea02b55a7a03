"""Trust of quantised variants: does 8-bit or 4-bit quantisation erode a model's utility, bias, robustness or
refusal scores? (HARDLLM's trust-aware quantisation check.)

    from tuneforge.audit.trust import trust_check
    report = trust_check(cfg, run="runs/quickstart")          # cfg.eval.tasks: utility and trust tasks
    report.data["trust"]["headline"]                           # what report.md's tables show

Each variant is built from the same float32 weights (the base model, or a run's adapter merged into it) and
evaluated on the same items through the same harness (`tuneforge.eval`): every score gets a 95% bootstrap
interval and, against fp32, a paired one. Variants (VARIANTS):

- fp32: the reference.
- bnb8 / bnb4: bitsandbytes LLM.int8 and 4-bit NF4 (double quantisation, float32 compute), loaded exactly as
  method qlora loads its base (`tuneforge.methods.qlora.qlora_load_kwargs`).
- gguf-q8_0: llama.cpp's convert_hf_to_gguf.py writes Q8_0, as `tuneforge export --format gguf --gguf-type q8_0`.
- gguf-q4_0 / q4_1 / q5_0 / q5_1: the converter writes F32 and `requantize_gguf` requantises it (see there).

A GGUF file is evaluated by loading it back through transformers' GGUF reader, which dequantises every tensor:
the quantised weights exactly, computed in float32. llama.cpp itself also rounds activations to 8 bits in its
quantised matmuls; llama-cpp-python (the `llamacpp` extra) is not used here. See docs/privacy.md.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from tuneforge.audit.trust_report import MARKER, summarise, trust_markdown, write_trust
from tuneforge.audit.trust_variants import (
    DEFAULT_VARIANTS,
    GGUF_NOTE,
    VARIANTS,
    TrustError,
    Variant,
    check_run,
    check_variants,
    gguf_file,
    load_variant,
    requantize_gguf,
    source_of,
)
from tuneforge.config import RunConfig
from tuneforge.eval.lm import LM
from tuneforge.eval.report import EvalReport, TaskResult, build_report, write_report
from tuneforge.eval.run import LoadedTask, ModelRef, load_tasks, run_task
from tuneforge.runs import RunDir

log = logging.getLogger("tuneforge.audit")

# --- the check -----------------------------------------------------------------------------------------------


def _pick_tasks(cfg: RunConfig, names: Sequence[str] | None) -> list[LoadedTask]:
    loaded = load_tasks(cfg)
    if not names:
        return loaded
    known = [t.name for t in loaded]
    missing = [n for n in names if n not in known]
    if missing:
        raise TrustError(f"tasks {', '.join(map(repr, missing))} are not in eval.tasks (known: {', '.join(known)})")
    return [t for t in loaded if t.name in names]


def _output_folder(cfg: RunConfig, run: Path | None, output_dir: str | Path | None, overwrite: bool) -> Path:
    out = Path(output_dir) if output_dir else (run or RunDir(cfg.run_dir).root) / "audit" / "trust"
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TrustError(f"{out} already exists and is not empty; choose another output folder or overwrite it")
        try:
            ours = MARKER in json.loads((out / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise TrustError(f"{out} does not hold a trust check (no report.json with {MARKER!r}); it is not deleted")
        shutil.rmtree(out)
    return out


def trust_check(
    cfg: RunConfig,
    run: str | Path | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    tasks: Sequence[str] | None = None,
    output_dir: str | Path | None = None,
    *,
    overwrite: bool = False,
    keep_variants: bool = False,
    progress: bool = True,
) -> EvalReport:
    """Evaluate fp32 and each quantised variant of `run` (None: `cfg.model`) on `cfg.eval.tasks` (or the ones
    named in `tasks`); write report.json / report.md / trust.png in `output_dir` (default: <run>/audit/trust).

    Every check on user input (variants, tools, tasks and their data, the run, the output folder) runs before the
    first model loads. The variants' files are built in <output>/variants and deleted at the end unless
    `keep_variants`.
    """
    chosen = check_variants(variants)
    run_dir = Path(run) if run is not None else None
    if run_dir is not None:
        check_run(run_dir)
    loaded = _pick_tasks(cfg, tasks)
    out = _output_folder(cfg, run_dir, output_dir, overwrite)
    work = out / "variants"
    work.mkdir(parents=True, exist_ok=True)
    # ours from the start: a check that dies half-way can be replaced with overwrite
    (out / "report.json").write_text(json.dumps({MARKER: {"status": "running"}}) + "\n", encoding="utf-8")
    source = source_of(cfg, run_dir, work)
    # every file first: a converter that fails on this model fails before the first evaluation
    files = {v.name: gguf_file(source, v, work) for v in chosen if v.kind == "gguf"}
    (work / "model-f32.gguf").unlink(missing_ok=True)  # only the requantiser's input
    refs, results, built = [], [], []
    for variant in chosen:
        start = time.perf_counter()
        log.info("trust check: building %s (%s)", variant.name, variant.about)
        gguf, written_s = files.get(variant.name, (None, 0.0))
        model, size, origin = load_variant(source, variant, gguf)
        build_s = time.perf_counter() - start + written_s
        lm = LM(model, source.tokenizer, cfg.eval.batch_size, progress)
        with _said_once(BNB_LOGGER):
            for task in loaded:
                torch.manual_seed(cfg.eval.seed)
                result = run_task(lm, task, variant.name)
                log.info("%s | %s: %s = %.4f", variant.name, task.name, task.task.primary, _primary(result, task))
                results.append(result)
        refs.append(ModelRef(variant.name, source.model_cfg.model_copy(update={"path": origin})))
        built.append({"variant": variant.name, "about": variant.about, "weights_bytes": size, "from": origin})
        built[-1] |= {"build_seconds": round(build_s, 1), "seconds": round(time.perf_counter() - start + written_s, 1)}
        del model, lm
        gc.collect()
    report = write_report(build_report(cfg, [(t.name, t.task) for t in loaded], refs, results), out)
    report.data[MARKER] = summarise(cfg, loaded, [v.name for v in chosen], results)
    note = GGUF_NOTE if files else ""
    report.data[MARKER] |= {"source": source.label, "variants": built, "note": note}
    write_trust(report, out)
    if not keep_variants:
        shutil.rmtree(work, ignore_errors=True)
    log.info("trust check written to %s", out)
    return report


# LLM.int8 casts float32 activations to float16 and says so on every matmul (bitsandbytes 0.50): once is enough.
BNB_LOGGER = "bitsandbytes.autograd._functions"


class _Once(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.msg not in self.seen
        self.seen.add(str(record.msg))
        return first


@contextlib.contextmanager
def _said_once(name: str) -> Iterator[None]:
    logger, once = logging.getLogger(name), _Once()
    logger.addFilter(once)
    try:
        yield
    finally:
        logger.removeFilter(once)


def _primary(result: TaskResult, task: LoadedTask) -> float:
    return result.scores.metrics[task.task.primary].value()


__all__ = [
    "DEFAULT_VARIANTS",
    "VARIANTS",
    "TrustError",
    "Variant",
    "check_variants",
    "load_variant",
    "requantize_gguf",
    "summarise",
    "trust_check",
    "trust_markdown",
]
