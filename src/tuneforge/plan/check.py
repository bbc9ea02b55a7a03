"""`python -m tuneforge.plan.check`: the planner's prediction against a measurement, per method family, on the
embedded model (`model.path: embedded`) trained by the real stack (tuneforge's SFT stage) for a few steps.

Each run is its own process (its peak RSS is its own): `train.max_steps` steps on generated samples long enough
to be truncated to exactly `data.cutoff_len` tokens (so every batch is batch × seq, no padding), one thread.
Measured: the RSS high-water mark of the training phase (reset when training begins, read when it ends:
/proc/self/clear_refs and VmHWM, as `tuneforge bench methods` does), and the mean time of the steps after the
first (the first allocates the optimizer state and runs the stage's start-up checks).

The process's own memory (Python, torch, transformers, peft, the tokenizer, the data, the Trainer) is measured,
not assumed: a first run trains a model of negligible size (2 layers, 32 wide, the embedded tokenizer) the same
way, and its training peak is the framework offset every prediction includes.

It refuses to start when the machine is busy (1-minute load ≥ 1.5): the timings would measure the neighbours.
Writes check.md and check.json into a new folder (an existing non-empty one is refused).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tuneforge.plan import PlanError

# (label, method params, gradient checkpointing): one row per family the planner models
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("full", {"name": "full"}, False),
    ("freeze", {"name": "freeze", "trainable_layers": 4}, False),
    ("galore", {"name": "galore", "rank": 64}, False),
    ("lora", {"name": "lora"}, False),
    ("lora-ckpt", {"name": "lora"}, True),
    ("dora", {"name": "dora"}, False),
    ("qlora", {"name": "qlora"}, False),
    ("prompt_tuning", {"name": "prompt_tuning"}, False),
    ("prefix_tuning", {"name": "prefix_tuning"}, False),
    ("ia3", {"name": "ia3"}, False),
    ("bitfit", {"name": "bitfit"}, False),
    ("series_adapter", {"name": "series_adapter"}, False),
    ("oft", {"name": "oft"}, False),
]
MAX_LOAD = 1.5
WORDS = [
    "the",
    "model",
    "reads",
    "every",
    "token",
    "of",
    "this",
    "sample",
    "and",
    "learns",
    "to",
    "continue",
    "the",
    "text",
    "about",
    "rivers",
    "mountains",
    "cities",
    "numbers",
    "colours",
    "seasons",
    "trains",
    "ships",
    "letters",
    "bridges",
    "gardens",
]


def _sample_text(i: int, words: int) -> str:
    return " ".join(f"{WORDS[(i * 7 + k * 3) % len(WORDS)]} {k % 97}" for k in range(words // 2))


def write_data(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "long.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Go on {i}.", "input": "", "output": _sample_text(i, 600)}) + "\n")
    return path


def write_tiny(folder: Path) -> Path:
    """A 2-layer, 32-wide Llama with the embedded model's tokenizer: the framework's memory, nothing else."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuneforge.models.embedded import embedded_model_dir

    source = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_config(
    out: Path, label: str, model: str, method: dict[str, Any], ckpt: bool, a: argparse.Namespace
) -> dict[str, Any]:
    return {
        "name": label,
        "stage": "sft",
        "model": {"path": model},
        "data": {"datasets": [{"path": str(out / "data" / "long.jsonl"), "format": "alpaca"}], "cutoff_len": a.seq},
        "method": method,
        "train": {
            "max_steps": a.steps,
            "batch_size": a.batch,
            "threads": a.threads,
            "lr": 1e-5,
            "gradient_checkpointing": ckpt,
            "group_by_length": False,
        },
        "output": {"dir": str(out / "runs")},
    }


# ------------------------------------------------------------------------------------- the worker process


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise PlanError(f"/proc/self/status has no {field}")


def worker(spec_path: Path, result_path: Path) -> int:
    from transformers import TrainerCallback

    from tuneforge.stages import load_config, run_stage
    from tuneforge.utils.logs import offline_env, setup_logging

    offline_env()
    setup_logging(False)

    class Probe(TrainerCallback):
        def __init__(self) -> None:
            self.record: dict[str, Any] = {"step_s": []}
            self._t = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.record["rss_train_start_mib"] = _status_kib("VmRSS") / 1024
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")  # VmHWM := VmRSS

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._t = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.record["step_s"].append(time.perf_counter() - self._t)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.record["train_peak_rss_mib"] = _status_kib("VmHWM") / 1024

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    probe = Probe()
    result = run_stage(load_config(spec), callbacks=[probe])
    record = {**probe.record, "trainable": result.trainable_params, "total": result.total_params}
    record["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0


# ----------------------------------------------------------------------------------------- the comparison


def measure(out: Path, label: str, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    spec, result, log = (
        out / "work" / f"{label}.json",
        out / "work" / f"{label}.result.json",
        out / "work" / f"{label}.log",
    )
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(config, indent=2), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(config["train"]["threads"])}
    with log.open("w", encoding="utf-8") as f:
        code = subprocess.run(
            [sys.executable, "-m", "tuneforge.plan.check", "--worker", str(spec), str(result)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
            check=False,
        ).returncode
    if code != 0 or not result.is_file():
        return {"error": f"exit {code}, see {log}"}
    return json.loads(result.read_text(encoding="utf-8"))


def predict(config: dict[str, Any], framework: float, hw: Any) -> Any:
    from dataclasses import replace

    from tuneforge.plan.planner import Request, make_plan
    from tuneforge.plan.shapes import load_shape
    from tuneforge.stages import load_config

    cfg = load_config(config)
    req = Request(
        shape=load_shape(cfg.model.path),
        method=cfg.method,
        seq=cfg.data.cutoff_len,
        batch=cfg.train.batch_size,
        hardware=replace(hw, framework=framework),
        checkpointing=cfg.train.gradient_checkpointing,
        optim=cfg.train.optim,
    )
    return make_plan(req, search=False)


def check(a: argparse.Namespace) -> list[dict[str, Any]]:
    from tuneforge.errors import TuneforgeError
    from tuneforge.plan.hardware import MIB, cpu
    from tuneforge.plan.timing import micro_batch_split

    load = os.getloadavg()[0]
    if load >= MAX_LOAD and not a.ignore_load:
        raise PlanError(f"the machine is busy (1-minute load {load:.2f} ≥ {MAX_LOAD}); run the check when it is quiet")
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        raise PlanError(f"{out} exists and is not empty; give a new folder (--out)")
    write_data(out / "data", max(64, a.batch * a.steps * 4))
    cases = [c for c in CASES if not a.methods or c[0] in a.methods.split(",")]
    hw = cpu(threads=a.threads)
    base = measure(
        out,
        "framework",
        run_config(out, "framework", str(write_tiny(out / "tiny")), {"name": "lora"}, False, a),
        a.timeout,
    )
    if "error" in base:
        raise PlanError(f"the framework run failed: {base['error']}")
    tiny = predict(run_config(out, "framework", str(out / "tiny"), {"name": "lora"}, False, a), 0.0, hw)
    framework = base["train_peak_rss_mib"] * MIB - tiny.memory.peak
    rows = [{"label": "framework", "measured_peak_mib": base["train_peak_rss_mib"], "framework_mib": framework / MIB}]
    for label, method, ckpt in cases:
        config = run_config(out, label, "embedded", method, ckpt, a)
        try:
            plan = predict(config, framework, hw)
        except TuneforgeError as e:  # one row fails, the others go on
            rows.append({"label": label, "family": "?", "trainable_pred": 0, "peak_pred_mib": 0, "error": str(e)})
            continue
        got = measure(out, label, config, a.timeout)
        row = _row(label, plan, got)
        fwd, bwd = micro_batch_split(plan.setup)
        row.update(fwd_flops=fwd, bwd_flops=bwd, compute_s=plan.timing.compute_s, memory_s=plan.timing.memory_s)
        rows.append(row)
        print(_line(row), flush=True)
    _write(out, rows, a, hw, load)
    return rows


def _row(label: str, plan: Any, got: dict[str, Any]) -> dict[str, Any]:
    from tuneforge.plan.hardware import MIB

    row: dict[str, Any] = {
        "label": label,
        "family": plan.setup.adaptation.family,
        "trainable_pred": plan.trainable,
        "peak_pred_mib": plan.memory.peak / MIB,
        "step_pred_s": plan.timing.step_s,
        "components_mib": {c.name: c.bytes / MIB for c in plan.memory.components},
    }
    if "error" in got:
        return {**row, "error": got["error"]}
    later = got["step_s"][1:] or got["step_s"]
    row.update(
        trainable=got["trainable"],
        peak_mib=got["train_peak_rss_mib"],
        process_peak_mib=got["process_peak_rss_mib"],
        step_s=sum(later) / len(later),
        steps_s=got["step_s"],
    )
    row["peak_err"] = row["peak_pred_mib"] / row["peak_mib"] - 1
    row["step_err"] = row["step_pred_s"] / row["step_s"] - 1
    return row


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        head = f"| {r['label']} | {r['family']} | {r['trainable_pred']:,} | – | {r['peak_pred_mib']:,.0f} |"
        return f"{head} failed: {r['error']} | | | | |"
    return (
        f"| {r['label']} | {r['family']} | {r['trainable_pred']:,} | {r['trainable']:,} | {r['peak_pred_mib']:,.0f} | "
        f"{r['peak_mib']:,.0f} | {100 * r['peak_err']:+.1f}% | {r['step_pred_s']:.2f} | {r['step_s']:.2f} | "
        f"{100 * r['step_err']:+.1f}% |"
    )


def _write(out: Path, rows: list[dict[str, Any]], a: argparse.Namespace, hw: Any, load: float) -> None:
    head = (
        "| run | family | trainable (plan) | trainable (real) | peak RSS plan MiB | peak RSS measured MiB | error "
        "| step plan s | step measured s | error |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    fw = rows[0]
    text = [
        f"# tuneforge.plan.check ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"embedded model, seq {a.seq} × batch {a.batch}, {a.steps} steps, {a.threads} thread(s), fp32, "
        f"load at start {load:.2f}; CPU {hw.name}: {hw.flops['fp32'] / 1e9:.1f} GFLOP/s fp32 matmul, "
        f"{hw.bandwidth / 1e9:.1f} GB/s, utilisation {hw.utilisation:.0%} forward / "
        f"{hw.backward_utilisation:.0%} backward",
        f"framework run (2-layer, 32-wide model): training peak {fw['measured_peak_mib']:,.0f} MiB → "
        f"framework offset {fw['framework_mib']:,.0f} MiB",
        "",
        head,
        *(_line(r) for r in rows[1:]),
        "",
    ]
    (out / "check.md").write_text("\n".join(text), encoding="utf-8")
    meta = {
        "seq": a.seq,
        "batch": a.batch,
        "steps": a.steps,
        "threads": a.threads,
        "load": load,
        "cpu": hw.name,
        "fp32_flops": hw.flops["fp32"],
        "bandwidth": hw.bandwidth,
        "dequant_per_s": hw.dequant_per_s,
        "utilisation": [hw.utilisation, hw.backward_utilisation],
    }
    (out / "check.json").write_text(json.dumps({"settings": meta, "rows": rows}, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuneforge.plan.check", description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    p.add_argument("--out", default="runs/plan-check", help="a new folder for check.md, check.json and the runs")
    p.add_argument("--methods", help="only these rows, e.g. lora,full (default: all)")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    p.add_argument("--ignore-load", action="store_true", help="measure even on a busy machine (timings will show it)")
    a = p.parse_args(argv)
    if a.worker:
        return worker(Path(a.worker[0]), Path(a.worker[1]))
    from tuneforge.errors import TuneforgeError

    try:
        rows = check(a)
    except TuneforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
