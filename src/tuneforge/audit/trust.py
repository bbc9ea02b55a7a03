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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tuneforge.config import ModelConfig, RunConfig
from tuneforge.errors import TuneforgeError
from tuneforge.eval.lm import LM
from tuneforge.eval.metrics import MetricRows
from tuneforge.eval.report import EvalReport, TaskResult, build_report, direction, markdown, write_report
from tuneforge.eval.run import LoadedTask, ModelRef, load_tasks, run_task
from tuneforge.eval.stats import bootstrap, paired_bootstrap, resample_indices
from tuneforge.runs import RunDir, model_config_of_run

log = logging.getLogger("tuneforge.audit")


class TrustError(TuneforgeError, ValueError):
    """A trust check that cannot run; the message names the variant, task or folder at fault."""


@dataclass(frozen=True)
class Variant:
    name: str
    kind: Literal["reference", "bnb", "gguf"]
    about: str
    bits: int | None = None  # bnb: 8 or 4
    gguf_type: str | None = None


_LEGACY = "requantised from the converter's F32 file with gguf-py's port of ggml's reference quantiser"
VARIANTS: dict[str, Variant] = {
    "fp32": Variant(name="fp32", kind="reference", about="float32 weights: the reference"),
    "bnb8": Variant(name="bnb8", kind="bnb", bits=8, about="bitsandbytes LLM.int8 (8-bit, outlier threshold 6)"),
    "bnb4": Variant(
        name="bnb4", kind="bnb", bits=4, about="bitsandbytes 4-bit NF4, double quantisation, float32 compute"
    ),
    "gguf-q8_0": Variant(
        name="gguf-q8_0", kind="gguf", gguf_type="q8_0", about="GGUF Q8_0 written by llama.cpp's convert_hf_to_gguf"
    ),
    "gguf-q5_1": Variant(name="gguf-q5_1", kind="gguf", gguf_type="q5_1", about=f"GGUF Q5_1, {_LEGACY}"),
    "gguf-q5_0": Variant(name="gguf-q5_0", kind="gguf", gguf_type="q5_0", about=f"GGUF Q5_0, {_LEGACY}"),
    "gguf-q4_1": Variant(name="gguf-q4_1", kind="gguf", gguf_type="q4_1", about=f"GGUF Q4_1, {_LEGACY}"),
    "gguf-q4_0": Variant(name="gguf-q4_0", kind="gguf", gguf_type="q4_0", about=f"GGUF Q4_0, {_LEGACY}"),
}
DEFAULT_VARIANTS = ("fp32", "bnb8", "bnb4", "gguf-q8_0", "gguf-q4_0")
MARKER = "trust"  # the key of report.json that says a folder holds a trust check (--overwrite may replace it)


def check_variants(names: Sequence[str]) -> list[Variant]:
    """The variants named, fp32 first (the reference of every comparison); each one buildable here."""
    chosen: list[Variant] = []
    for name in ["fp32", *[n for n in names if n != "fp32"]]:
        key = name.strip().lower()
        if key not in VARIANTS:
            hint = ""
            if key.startswith("gguf-"):
                hint = (
                    f" {key[5:].upper()} is not written here: K-quants and i-quants need llama.cpp's llama-quantize "
                    "(C++, not installed), and gguf-py can write only Q8_0 and the legacy Q4_0/Q4_1/Q5_0/Q5_1 types."
                )
            raise TrustError(f"variant {name!r} is not one of {', '.join(VARIANTS)}.{hint}")
        if VARIANTS[key] in chosen:
            raise TrustError(f"variant {name!r} is named twice")
        chosen.append(VARIANTS[key])
    if any(v.kind == "bnb" for v in chosen):
        import importlib.util

        from tuneforge.methods.qlora import INSTALL_HINT

        if importlib.util.find_spec("bitsandbytes") is None:
            bad = ", ".join(v.name for v in chosen if v.kind == "bnb")
            raise TrustError(f"variants {bad}: {INSTALL_HINT} (or leave them out: variants without bnb8/bnb4)")
    if any(v.kind == "gguf" for v in chosen):
        from tuneforge.export.run import ExportError, gguf_converter

        try:
            gguf_converter()
        except ExportError as e:
            bad = ", ".join(v.name for v in chosen if v.kind == "gguf")
            raise TrustError(f"variants {bad}: {e}") from None
    return chosen


# --- GGUF requantisation -------------------------------------------------------------------------------------


def requantize_gguf(src: Path, out: Path, qtype: str) -> Path:
    """Write `src` (an F32/F16 GGUF) with its matrices in Q4_0, Q4_1, Q5_0 or Q5_1, as llama-quantize would.

    Fills a gap: llama-quantize is a C++ tool (not installed) and convert_hf_to_gguf.py writes only F32/F16/Q8_0.
    gguf-py ships numpy ports of ggml's reference quantisers (its tests check them bit for bit against libggml),
    and this applies llama-quantize's tensor rules for the legacy types: 1-D tensors (norms) stay F32; the output
    matrix (the token embedding when the two are tied) gets more bits, Q8_0 here where llama.cpp takes Q6_K if the
    row width is a multiple of 256 (gguf-py cannot write Q6_K), else Q8_0 as well; a matrix whose rows are not a
    multiple of 32 stays as it is.
    """
    import gguf

    types = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1"}
    if qtype not in types:
        raise TrustError(f"GGUF type {qtype!r} cannot be requantised here; supported: {', '.join(types)}")
    target = gguf.GGMLQuantizationType[types[qtype]]
    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(str(out), arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType[f"MOSTLY_{types[qtype]}"])
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    names = {t.name for t in reader.tensors}
    output = "output.weight" if "output.weight" in names else "token_embd.weight"
    for t in reader.tensors:
        data = np.asarray(t.data)
        plain = t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        if not plain or data.ndim < 2 or data.shape[-1] % 32:
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
            continue
        kind = gguf.GGMLQuantizationType.Q8_0 if t.name == output else target
        writer.add_tensor(t.name, gguf.quants.quantize(data.astype(np.float32), kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


# --- building and loading variants ---------------------------------------------------------------------------


@dataclass
class Source:
    """What the variants are made of: an HF folder of float32 weights and the tokenizer every variant uses."""

    label: str
    folder: Path
    tokenizer: Any
    model_cfg: ModelConfig


def _source(cfg: RunConfig, run: Path | None, work: Path) -> Source:
    """The base model's folder; for a run, its trained output merged into the base in float32 (work/fp32)."""
    from tuneforge.models.loader import load_tokenizer, resolve_model_path

    if run is None:
        model_cfg = cfg.model.model_copy(update={"dtype": "float32"})
        return Source(
            f"base model {cfg.model.path}", resolve_model_path(model_cfg), load_tokenizer(model_cfg), model_cfg
        )
    from tuneforge.export.run import save_hf
    from tuneforge.inference import LocalEngine
    from tuneforge.methods import merge

    base_cfg, output = model_config_of_run(run)
    base_cfg = base_cfg.model_copy(update={"dtype": "float32"})
    engine = LocalEngine(base_cfg, output)
    model = engine.model if (output / "config.json").is_file() else merge(engine.model)  # full runs: as saved
    folder = work / "fp32"
    save_hf(model, engine.tokenizer, folder)
    tokenizer = engine.tokenizer
    del model, engine
    gc.collect()
    return Source(f"run {run}", folder, tokenizer, base_cfg.model_copy(update={"path": str(folder), "tokenizer": None}))


def _check_run(run: Path) -> None:
    """A run whose adapter cannot be folded into the weights has nothing to quantise: refuse before loading."""
    from tuneforge.methods import method_of, saved_params

    _, output = model_config_of_run(run)
    params = saved_params(output)
    if params is not None and method_of(params).output == "adapter" and not method_of(params).mergeable:
        raise TrustError(
            f"run {run}: method {params.name} is not mergeable, so its weights cannot be quantised with the base; "
            "the trust check compares quantised copies of one set of weights"
        )


def _gguf_file(source: Source, variant: Variant, work: Path) -> tuple[Path, float]:
    """The variant's GGUF file, written into `work`, and the seconds it took."""
    from tuneforge.export.run import ExportError, gguf_converter, to_gguf

    start = time.perf_counter()
    qtype = variant.gguf_type or "q8_0"
    out = work / f"model-{qtype}.gguf"
    log.info("trust check: writing %s", out.name)
    try:
        if qtype == "q8_0":
            to_gguf(gguf_converter(), source.folder, "q8_0", out, quiet=True)
        else:
            f32 = work / "model-f32.gguf"
            if not f32.is_file():
                to_gguf(gguf_converter(), source.folder, "f32", f32, quiet=True)
            requantize_gguf(f32, out, qtype)
    except ExportError as e:
        raise TrustError(f"variant {variant.name}: {e}") from None
    return out, time.perf_counter() - start


def load_variant(source: Source, variant: Variant, gguf: Path | None = None) -> tuple[Any, int, str]:
    """The variant's model, its weights' size in bytes and where they came from (`gguf`: its file)."""
    from tuneforge.models.loader import load_model

    if variant.kind == "gguf":
        from transformers import AutoModelForCausalLM

        if gguf is None:
            raise TrustError(f"variant {variant.name}: no GGUF file given")
        # transformers dequantises every tensor of the file: the quantised weights exactly, held in float32
        read = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        return read.eval(), gguf.stat().st_size, str(gguf)
    kwargs: dict[str, Any] = {}
    if variant.kind == "bnb":
        from tuneforge.methods.qlora import QloraParams, qlora_load_kwargs, release_checkpoint_pages

        kwargs = qlora_load_kwargs(QloraParams(bits=variant.bits or 4))  # exactly as method qlora loads a base
    model = load_model(source.model_cfg, source.tokenizer, **kwargs)
    if variant.kind == "bnb":
        release_checkpoint_pages(model)
    return model.eval(), int(model.get_memory_footprint()), str(source.folder)


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
        _check_run(run_dir)
    loaded = _pick_tasks(cfg, tasks)
    out = _output_folder(cfg, run_dir, output_dir, overwrite)
    work = out / "variants"
    work.mkdir(parents=True, exist_ok=True)
    # ours from the start: a check that dies half-way can be replaced with overwrite
    (out / "report.json").write_text(json.dumps({MARKER: {"status": "running"}}) + "\n", encoding="utf-8")
    source = _source(cfg, run_dir, work)
    # every file first: a converter that fails on this model fails before the first evaluation
    files = {v.name: _gguf_file(source, v, work) for v in chosen if v.kind == "gguf"}
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
    _write(report, out)
    if not keep_variants:
        shutil.rmtree(work, ignore_errors=True)
    log.info("trust check written to %s", out)
    return report


GGUF_NOTE = (
    "GGUF variants are evaluated through transformers' GGUF reader (weights dequantised, float32 compute); "
    "llama.cpp's own kernels, which also round activations to 8 bits, were not run (llama-cpp-python is not "
    "installed for this check)."
)


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


# --- the summary: headline metrics, erosion, robustness ------------------------------------------------------


def badness(x: Any, rows: MetricRows) -> Any:
    """How far a score is from good: the distance to a bias score's ideal, else minus or plus the score."""
    if rows.ideal is not None:
        return np.abs(np.asarray(x) - rows.ideal)
    return -np.asarray(x) if rows.higher_is_better else np.asarray(x)


def _ci(value: float, reps: np.ndarray) -> dict[str, float | None]:
    finite = reps[np.isfinite(reps)]
    lo, hi = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
    clean = lambda x: None if not np.isfinite(x) else round(float(x), 6)  # noqa: E731  (JSON has no NaN)
    return {"value": clean(value), "ci95_low": clean(lo), "ci95_high": clean(hi)}


def _verdict(erosion: dict[str, float | None]) -> str:
    lo, hi = erosion["ci95_low"], erosion["ci95_high"]
    if lo is None or hi is None:
        return "n/a"
    return "worse" if lo > 0 else "better" if hi < 0 else "no clear change"


def summarise(
    cfg: RunConfig, tasks: Sequence[LoadedTask], labels: Sequence[str], results: Sequence[TaskResult]
) -> dict[str, Any]:
    """Per task and headline metric: each variant's score, its difference to fp32 and whether it moved away from
    good (`erosion`, with a paired interval); per clean/noisy task pair, each variant's noisy - clean score."""
    got = {(r.task, r.model): r for r in results}
    ref, headline, robustness = labels[0], [], []
    for k, task in enumerate(tasks):
        idx = resample_indices(got[(task.name, ref)].n, cfg.eval.bootstrap, cfg.eval.seed + k)  # as build_report
        for metric in task.task.headline:
            rows = {label: got[(task.name, label)].scores.metrics[metric] for label in labels}
            iv = {label: bootstrap(r, idx) for label, r in rows.items()}
            entry: dict[str, Any] = {"task": task.name, "metric": metric, "ideal": rows[ref].ideal}
            entry |= {"higher_is_better": rows[ref].higher_is_better, "scores": {}, "vs_reference": {}}
            for label in labels:
                entry["scores"][label] = _ci(iv[label].value, iv[label].replicates)
                if label == ref:
                    continue
                diff = paired_bootstrap(rows[ref], rows[label], idx)
                bad = badness(iv[label].value, rows[ref]) - badness(iv[ref].value, rows[ref])
                reps = badness(iv[label].replicates, rows[ref]) - badness(iv[ref].replicates, rows[ref])
                erosion = _ci(float(bad), np.asarray(reps, dtype=float))
                entry["vs_reference"][label] = {
                    "difference": _ci(diff.value, diff.replicates),
                    "erosion": erosion,
                    "verdict": _verdict(erosion),
                }
            headline.append(entry)
        clean = _clean_twin(task, tasks)
        if clean is not None:
            robustness.append(_robustness(task, clean, labels, got, idx))
    return {"reference": ref, "headline": headline, "robustness": robustness}


def _clean_twin(task: LoadedTask, tasks: Sequence[LoadedTask]) -> LoadedTask | None:
    """The unperturbed task with the same data and settings as a perturbed one (same items), if it is there."""
    if task.task.spec.perturb is None:
        return None
    same = task.task.spec.model_dump(exclude={"name", "perturb"})
    ids = [i.example.id for i in task.items]
    for other in tasks:
        spec = other.task.spec
        same_items = [i.example.id for i in other.items] == ids
        if spec.perturb is None and spec.model_dump(exclude={"name", "perturb"}) == same and same_items:
            return other
    return None


def _robustness(
    noisy: LoadedTask, clean: LoadedTask, labels: Sequence[str], got: dict[tuple[str, str], TaskResult], idx: Any
) -> dict[str, Any]:
    metric = noisy.task.primary
    assert noisy.task.spec.perturb is not None
    entry: dict[str, Any] = {"task": clean.name, "noisy": noisy.name, "metric": metric}
    entry |= {"char_noise": noisy.task.spec.perturb.char_noise, "noisy_minus_clean": {}}
    for label in labels:
        diff = paired_bootstrap(
            got[(clean.name, label)].scores.metrics[metric], got[(noisy.name, label)].scores.metrics[metric], idx
        )
        entry["noisy_minus_clean"][label] = _ci(diff.value, diff.replicates)
    return entry


# --- writing -------------------------------------------------------------------------------------------------


def _cell(e: dict[str, Any], signed: bool = False) -> str:
    f = (lambda x: f"{x:+.3f}") if signed else (lambda x: f"{x:.3f}")
    if e["value"] is None:
        return "n/a"
    ci = "" if e["ci95_low"] is None else f" [{f(e['ci95_low'])}, {f(e['ci95_high'])}]"
    return f(e["value"]) + ci


def trust_markdown(report: EvalReport) -> str:
    d, t = report.data, report.data[MARKER]
    labels, ref = [m["label"] for m in d["models"]], t["reference"]
    others = labels[1:]
    lines = [
        f"# Trust of quantised variants: {t['source']}",
        "",
        "| variant | weights (MB) | how | seconds |",
        "|---|---|---|---|",
    ]
    for v in t["variants"]:
        lines.append(f"| {v['variant']} | {v['weights_bytes'] / 1e6:.1f} | {v['about']} | {v['seconds']:.0f} |")
    limit = f"a seeded sample of {d['limit']} items per task" if d["limit"] else "all items"
    lines += ["", f"Seed {d['seed']}, {limit}, 95% intervals from {d['bootstrap']} bootstrap resamples over items.", ""]
    lines += ["## Scores", "", "| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for h in t["headline"]:
        good = direction({"ideal": h["ideal"], "higher_is_better": h["higher_is_better"]})
        cells = [_cell(h["scores"][label]) for label in labels]
        lines.append(f"| {h['task']} | {h['metric']}{good} | " + " | ".join(cells) + " |")
    lines += ["", f"## Against {ref} (paired 95% intervals)", ""]
    lines += ["A variant is **worse** where the interval of its move away from good (towards the wrong side, or away"]
    lines += ["from a bias score's ideal) lies above zero, **better** where it lies below.", ""]
    lines += [
        "| task | metric | " + " | ".join(f"{o} - {ref}" for o in others) + " |",
        "|---|---|" + "---|" * len(others),
    ]
    for h in t["headline"]:
        cells = []
        for o in others:
            c = h["vs_reference"][o]
            mark = {"worse": " **worse**", "better": " **better**"}.get(c["verdict"], "")
            cells.append(_cell(c["difference"], signed=True) + mark)
        lines.append(f"| {h['task']} | {h['metric']} | " + " | ".join(cells) + " |")
    if t["robustness"]:
        lines += ["", "## Robustness: noisy - clean score, same items", ""]
        lines += ["| task | metric | char noise | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
        for r in t["robustness"]:
            cells = [_cell(r["noisy_minus_clean"][label], signed=True) for label in labels]
            lines.append(f"| {r['task']} | {r['metric']} | {r['char_noise']:g} | " + " | ".join(cells) + " |")
    lines += ["", t["note"], "", "## Every metric", ""] if t["note"] else ["", "## Every metric", ""]
    body = markdown(report).split("\n", 2)[2]  # the evaluation report without its title
    return "\n".join(lines) + "\n" + body.replace("\n## ", "\n### ")


def trust_plot(report: EvalReport, out: Path) -> Path | None:
    """One panel per headline metric: each variant's score with its 95% interval; a bias score's ideal dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = report.data[MARKER]["headline"]
    if not heads:
        return None
    labels = [m["label"] for m in report.data["models"]]
    cols = min(3, len(heads))
    rows = (len(heads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=110, squeeze=False)
    for ax, h in zip(axes.flat, heads, strict=False):
        vals = [h["scores"][label] for label in labels]
        v = np.array([e["value"] if e["value"] is not None else np.nan for e in vals])
        lo = np.array([e["ci95_low"] if e["ci95_low"] is not None else np.nan for e in vals])
        hi = np.array([e["ci95_high"] if e["ci95_high"] is not None else np.nan for e in vals])
        err = np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0).clip(min=0)
        ax.bar(range(len(labels)), v, yerr=err, capsize=3, color=["#555555", *["#4c72b0"] * (len(labels) - 1)])
        if h["ideal"] is not None:
            ax.axhline(h["ideal"], ls="--", color="#c44e52", lw=1)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{h['task']}: {h['metric']}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(heads) :]:
        ax.axis("off")
    fig.suptitle(f"{report.data[MARKER]['source']}: scores per variant (95% intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _write(report: EvalReport, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(report.data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(trust_markdown(report), encoding="utf-8")
    trust_plot(report, out / "trust.png")


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
