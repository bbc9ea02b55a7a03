"""`tuneforge bench speed`: CPU fine-tuning speed and memory against the plain Hugging Face path.

Variants train LoRA (r=8, alpha=16, all linear layers) on the same model, data, samples and seed, each in its
own process (peak RSS is its own), one epoch over exactly `steps * 4` samples, so every variant trains on the
same tokens and the loss afterwards is comparable:

- `hf`: the plain path — transformers Trainer + PEFT, fp32, padded batches of 4 (DataCollatorForSeq2Seq),
  random order, the full logits; only the data rendering is tuneforge's (the same token ids for everyone);
- `tuneforge`: `tuneforge train` with its defaults plus data.packing (see docs/speed.md);
- the ablation: `tf_plain` (every lever off) and one lever on at a time.

`hf` and `tuneforge` alternate (A B A B, `bench.repeats`), so load from other processes hits both alike; the
ablation runs once each. A last process scores multiple-choice items (CommonsenseQA from ../shared/data, or
the shipped iso_dates_test set) through tuneforge.eval's batched log-likelihood and through a naive
per-sample loop. Outputs speed.md and speed.json in `bench.out`.

Settings: a RunConfig (`tuneforge bench speed [CONFIG] [key=value ...]`, see config.BenchConfig), read into
SpeedSettings by `SpeedSettings.from_config`; every variant is that config's model, data and train sections
with the benchmark's data, LoRA and one-epoch schedule, then the variant's levers, set on top.

Measured per training run: real tokens/s (non-pad tokens of the trained samples / training seconds), s/step,
peak RSS, the held-out loss after training (a fixed validation split, plain forward), and achieved FLOP/s:
the useful FLOPs of the epoch, counted analytically (FLOP_FORMULA), over the training seconds, also as a
fraction of the fp32 and bf16 matmul peaks timed in the same process before the model loads.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config import BenchConfig, RunConfig, refuse_set
from tuneforge.errors import TuneforgeError

log = logging.getLogger("tuneforge.bench")


class BenchError(TuneforgeError, ValueError):
    """A benchmark setting that cannot run (an unknown variant, a run that is not the kind checked)."""


class BenchExistsError(TuneforgeError, FileExistsError):
    """The benchmark's output folder holds an earlier benchmark: it is never overwritten."""


def _shared_data() -> Path:
    """The research fixtures (../shared/data of the checkout, or TUNEFORGE_SHARED_DATA), read in place."""
    env = os.environ.get("TUNEFORGE_SHARED_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd().parent, Path(__file__).resolve().parents[4]):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return Path.cwd().parent / "shared" / "data"


SHARED_DATA = _shared_data()
MATH_DATA = SHARED_DATA / "llm_adapters" / "ft-training_set" / "math_data.json"
CSQA = SHARED_DATA / "csqa" / "dev_rand_split.jsonl"

FLOP_FORMULA = (
    "per trained token 4*P_frozen (forward + input gradient of the frozen linear layers) + 6*P_lora (forward, "
    "input and weight gradient of the adapter); per label token 4*d*V (lm_head forward + input gradient, only "
    "where a label is: the useful part); per sample of T tokens 6*L*d*T^2 (causal attention scores and "
    "values, forward 2*L*d*T^2, backward twice that)"
)

PLAIN = [
    "data.packing=false",
    "train.group_by_length=false",
    "train.label_only_logits=false",
    "train.onednn_fp32=false",
]
# name -> config overrides of a tuneforge run (None: the plain HF baseline). Later overrides win.
VARIANTS: dict[str, list[str] | None] = {
    "hf": None,
    "tuneforge": ["data.packing=true"],  # the defaults (label-only loss) + packing, for this mixed-length data
    "tf_plain": PLAIN,
    "+group_by_length": [*PLAIN, "train.group_by_length=true"],
    "+packing": [*PLAIN, "data.packing=true"],
    "+label_only_logits": [*PLAIN, "train.label_only_logits=true"],
    "+onednn_fp32": [*PLAIN, "train.onednn_fp32=true"],
    "tuneforge+gradient_checkpointing": ["data.packing=true", "train.gradient_checkpointing=true"],
    "tuneforge+bf16_autocast": ["data.packing=true", "train.bf16_autocast=true"],
}
PAIRED = ("hf", "tuneforge")
DEFAULT_ABLATION = tuple(BenchConfig().ablation)
LORA = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
# Keys the benchmark sets per run itself: a value given for one would go unused.
OWN_KEYS = {
    "data.datasets": "every variant trains on the same shipped + LLM-Adapters mix",
    "data.mix_size": "the mix is train.max_steps x train.batch_size + data.val_size samples",
    **{f"method.{k}": "every variant trains LoRA r=8, alpha 16, all linear layers" for k in LORA if k != "name"},
}


@dataclass
class SpeedSettings:
    model: str = "embedded"
    steps: int = 12
    batch_size: int = 4
    cutoff_len: int = 512
    heldout: int = 16
    repeats: int = 2
    ablation: Sequence[str] = DEFAULT_ABLATION
    eval_items: int = 40
    seed: int = 42
    lr: float = 2e-4
    timeout_s: float = 3600.0
    overrides: Sequence[str] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)  # config sections every variant starts from (from_config)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> SpeedSettings:
        """The settings of `tuneforge bench speed` from a RunConfig (BENCH_SPEED_PRESETS already applied)."""
        refuse_set(cfg, OWN_KEYS, "tuneforge bench speed")
        if cfg.method.name != "lora":
            raise BenchError(f"tuneforge bench speed trains LoRA r=8 (method.name={cfg.method.name!r} is not used)")
        if cfg.train.max_steps <= 0:
            raise BenchError(f"tuneforge bench speed needs train.max_steps > 0 (got {cfg.train.max_steps})")
        if cfg.data.val_size < 1 or cfg.data.val_size != int(cfg.data.val_size):
            raise BenchError(f"tuneforge bench speed holds out a count of samples: data.val_size={cfg.data.val_size}")
        dump = cfg.model_dump(mode="json")
        return cls(
            model=cfg.model.path,
            steps=cfg.train.max_steps,
            batch_size=cfg.train.batch_size,
            cutoff_len=cfg.data.cutoff_len,
            heldout=int(cfg.data.val_size),
            repeats=cfg.bench.repeats,
            ablation=list(cfg.bench.ablation),
            eval_items=cfg.bench.eval_items if CSQA.is_file() else 0,
            seed=cfg.train.seed,
            lr=cfg.train.lr,
            base={"model": dump["model"], "data": dump["data"], "train": dump["train"]},
        )


def data_section(s: SpeedSettings) -> dict[str, Any]:
    """Varied lengths: the shipped short sets plus, when ../shared/data is there, math word problems with
    worked answers (read in place, for benchmarking only)."""
    datasets: list[dict[str, Any]] = [{"name": "identity"}, {"name": "iso_dates"}]
    if MATH_DATA.is_file():
        datasets.append({"path": str(MATH_DATA), "format": "alpaca", "ratio": 2.0})
    return {
        **s.base.get("data", {}),
        "datasets": datasets,
        "cutoff_len": s.cutoff_len,
        "mix_size": s.steps * s.batch_size + s.heldout,
        "val_size": s.heldout,
        "seed": s.seed,
        "variables": {"name": "Forge", "author": "tuneforge"},
    }


def run_config(s: SpeedSettings, name: str, runs_dir: Path) -> dict[str, Any]:
    return {
        "name": name,
        "stage": "sft",
        "model": {**s.base.get("model", {}), "path": s.model},
        "data": data_section(s),
        "method": dict(LORA),
        "train": {
            **s.base.get("train", {}),
            "epochs": 1,
            "max_steps": -1,  # one epoch over exactly steps x batch_size samples (packed runs take fewer steps)
            "resume": False,
            "batch_size": s.batch_size,
            "lr": s.lr,
            "seed": s.seed,
            "logging_steps": 1,
            "save_steps": 0,
        },
        "output": {"dir": str(runs_dir)},
    }


# ---------------------------------------------------------------------------------------------- the parent


def run_variant(s: SpeedSettings, name: str, tag: str, out: Path, kind: str = "train") -> dict[str, Any]:
    overrides = VARIANTS.get(name)
    folder = out / "work" / tag
    folder.mkdir(parents=True, exist_ok=False)
    spec = {
        "kind": "hf" if overrides is None and kind == "train" else kind,
        "config": run_config(s, tag, out / "runs"),
        "overrides": [*(overrides or []), *s.overrides],
        "out": str(folder / "hf_output"),
        "items": s.eval_items,
    }
    (folder / "spec.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "tuneforge.bench.speed",
        "--worker",
        str(folder / "spec.json"),
        str(folder / "result.json"),
    ]
    log.info("bench speed: %s", tag)
    started = time.perf_counter()
    with (folder / "log.txt").open("w", encoding="utf-8") as logf:
        try:
            proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=s.timeout_s, env=os.environ)
            failure = None if proc.returncode == 0 else f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"timed out after {s.timeout_s:.0f} s"
    result = folder / "result.json"
    record = json.loads(result.read_text(encoding="utf-8")) if result.is_file() else {}
    if failure and "error" not in record:
        record["error"] = f"{failure} (see {folder / 'log.txt'})"
    record.update(variant=name, tag=tag, wall_s=round(time.perf_counter() - started, 1))
    return record


def bench_speed(s: SpeedSettings, out: Path) -> dict[str, Any]:
    if out.exists() and any(out.iterdir()):
        raise BenchExistsError(f"output folder {out} exists and is not empty; choose another bench.out")
    out.mkdir(parents=True, exist_ok=True)
    unknown = [a for a in s.ablation if a not in VARIANTS]
    if unknown:
        raise BenchError(f"unknown ablation variant(s) {unknown} in bench.ablation; known: {', '.join(VARIANTS)}")
    runs: list[dict[str, Any]] = []
    for rep in range(s.repeats):
        for name in PAIRED:
            runs.append(run_variant(s, name, f"{name}-{rep + 1}", out))
            _write(runs, None, s, out)
    for name in s.ablation:
        runs.append(run_variant(s, name, f"{name}-1".replace("+", "plus_"), out))
        _write(runs, None, s, out)
    ev = run_variant(s, "eval", "eval", out, kind="eval") if s.eval_items else None
    return _write(runs, ev, s, out)


def summary(runs: list[dict[str, Any]], ev: dict[str, Any] | None) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    pairs = []
    reps = sorted({r["tag"].rsplit("-", 1)[1] for r in ok if r["variant"] in PAIRED})
    for rep in reps:
        a = next((r for r in ok if r["tag"] == f"hf-{rep}"), None)
        b = next((r for r in ok if r["tag"] == f"tuneforge-{rep}"), None)
        if a and b:
            pairs.append(
                {
                    "repeat": rep,
                    "tokens_per_s_ratio": round(b["tokens_per_s"] / a["tokens_per_s"], 2),
                    "loss_rel_diff": round(abs(b["heldout_loss"] - a["heldout_loss"]) / a["heldout_loss"], 4),
                    "rss_ratio": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
                    "frac_bf16_peak": round(b["frac_bf16_peak"], 3),
                    "frac_fp32_peak": round(b["frac_fp32_peak"], 3),
                }
            )
    out: dict[str, Any] = {"pairs": pairs}
    if pairs:
        n = len(pairs)
        out["mean"] = {k: round(sum(p[k] for p in pairs) / n, 3) for k in pairs[0] if k != "repeat"}
    base = next((r for r in ok if r["variant"] == "tf_plain"), None)
    if base:
        out["ablation"] = {
            r["variant"]: round(r["tokens_per_s"] / base["tokens_per_s"], 2) for r in ok if r["variant"] not in PAIRED
        }
    if ev and "error" not in ev:
        out["eval_speedup"] = ev["speedup"]
    return out


def _write(runs: list[dict[str, Any]], ev: dict[str, Any] | None, s: SpeedSettings, out: Path) -> dict[str, Any]:
    report = {
        "settings": asdict(s),
        "flop_formula": FLOP_FORMULA,
        "runs": runs,
        "eval": ev,
        "summary": summary(runs, ev),
    }
    (out / "speed.json").write_text(json.dumps(report, indent=2, default=list), encoding="utf-8")
    (out / "speed.md").write_text(markdown(report), encoding="utf-8")
    return report


def _g(x: float) -> str:
    return f"{x / 1e9:.1f}"


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"# tuneforge bench speed — {s['model']}, LoRA r=8 all-linear, batch {s['batch_size']}, "
        f"cutoff {s['cutoff_len']}, {s['steps']} steps (one epoch over the same samples)",
        "",
        "| run | tokens/s | s/step | peak RSS MB | held-out loss | GFLOP/s | % fp32 peak | % bf16 peak "
        "| peaks fp32 / oneDNN / bf16 GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        if "error" in r:
            lines.append(f"| {r['tag']} | failed: {r['error'][:120]} |||||||| ")
            continue
        p = r["peaks"]
        peaks = f"{_g(p['fp32_default'])} / {_g(p['fp32_onednn']) if 'fp32_onednn' in p else '—'} / {_g(p['bf16'])}"
        lines.append(
            f"| {r['tag']} | {r['tokens_per_s']:.0f} | {r['s_per_step']:.2f} | {r['peak_rss_mb']:.0f} "
            f"| {r['heldout_loss']:.4f} | {_g(r['flops_per_s'])} | {100 * r['frac_fp32_peak']:.0f}% "
            f"| {100 * r['frac_bf16_peak']:.0f}% | {peaks} |"
        )
    sm = report["summary"]
    if sm.get("pairs"):
        lines += [
            "",
            "| pair | tokens/s ratio | held-out loss rel. diff | peak RSS ratio | % bf16 peak |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in sm["pairs"]:
            lines.append(
                f"| {p['repeat']} | {p['tokens_per_s_ratio']:.2f}x | {100 * p['loss_rel_diff']:.2f}% "
                f"| {p['rss_ratio']:.3f} | {100 * p['frac_bf16_peak']:.0f}% |"
            )
    if sm.get("ablation"):
        lines += ["", "Ablation (tokens/s relative to tf_plain, one run each):", ""]
        lines += [f"- {k}: {v:.2f}x" for k, v in sm["ablation"].items()]
    ev = report.get("eval")
    if ev:
        if "error" in ev:
            lines += ["", f"Evaluation: failed: {ev['error']}"]
        else:
            lines += [
                "",
                f"Evaluation ({ev['items']} CommonsenseQA items, {ev['pairs']} choices): naive per-pair loop "
                f"{ev['naive_s_default']} s, batched + shared-context cache {ev['batched_s_default']} s "
                f"= {ev['speedup']}x (max |Δ log p| {ev['max_abs_diff_default']:.1e})"
                + (
                    f"; with oneDNN {ev['batched_s_onednn']} s = {ev['speedup_onednn']}x"
                    if "speedup_onednn" in ev
                    else ""
                ),
            ]
    lines += ["", f"FLOPs: {report['flop_formula']}.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tuneforge.bench.speed --worker SPEC RESULT` (one run of the benchmark; the parent starts it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["--worker"] or len(argv) != 3:
        print("run the benchmark with: tuneforge bench speed [CONFIG] [key=value ...]", file=sys.stderr)
        return 2
    from tuneforge.bench.speed_worker import worker_main

    return worker_main(Path(argv[1]), Path(argv[2]))


def speed_main(cfg: RunConfig) -> int:
    """`tuneforge bench speed`: run it, print speed.md; exit 1 when a run failed."""
    out = Path(cfg.bench.out or "runs/bench-speed")
    report = bench_speed(SpeedSettings.from_config(cfg), out)
    print((out / "speed.md").read_text(encoding="utf-8"), end="")
    return 0 if all("error" not in r for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
