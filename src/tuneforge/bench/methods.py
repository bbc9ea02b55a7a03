"""`tuneforge bench methods`: train several methods on the same data, seed and steps, and compare them.

Each method trains in its own process (so its peak RSS is its own) in a fresh run folder under
`<out>/runs/`, is scored on held-out data through tuneforge.eval (default: exact match on the shipped
iso_dates_test set), and gets a PSCP score (bench/pscp.py). A method that fails becomes a failed row with
its error; the others go on. Outputs: bench.md, bench.csv, bench.png and bench.json in `<out>`.

Settings: a RunConfig (`tuneforge bench methods [CONFIG] [key=value ...]`, see config.BenchConfig), read into
BenchSettings by `BenchSettings.from_config`: every method's run is that config's model, data, method and
train sections with the method name, the benchmark's data and its scoring set per run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.bench.pscp import DEFAULT_PSCP, PscpConstants, pscp
from tuneforge.config import BenchConfig, RunConfig, refuse_set
from tuneforge.data.synthetic.generate import HERE as SHIPPED_DIR

log = logging.getLogger("tuneforge.bench")

DEFAULT_METHODS = tuple(BenchConfig().methods)
# Keys the benchmark sets per run itself: a value given for one would go unused.
OWN_KEYS = {
    "data.datasets": "every method trains on the shipped iso_dates set",
    "eval.tasks": "every method is scored on iso_dates_test",
}
FULL_WEIGHT = frozenset({"full", "freeze", "galore", "apollo"})  # trained at lr / 10 (see docs)

COLUMNS = (
    "method",
    "status",
    "lr",
    "steps",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "peak_rss_mb",
    "load_peak_rss_mb",
    "train_peak_rss_mb",
    "model_mb",
    "tokens_per_s",
    "train_s",
    "wall_s",
    "final_loss",
    "score",
    "flops_per_step",
    "pscp",
    "error",
)


@dataclass
class BenchSettings:
    methods: Sequence[str] = DEFAULT_METHODS
    model: str = "embedded"
    steps: int = 30
    batch_size: int = 4
    cutoff_len: int = 128
    lr: float = 1e-3
    score_items: int | None = 40  # eval.limit (None: every item)
    seed: int = 42
    threads: int | None = None
    timeout_s: float = 1800.0
    overrides: Sequence[str] = ()
    pscp: PscpConstants = field(default_factory=lambda: DEFAULT_PSCP)
    base: dict[str, Any] = field(default_factory=dict)  # config sections every run starts from (from_config)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> BenchSettings:
        """The settings of `tuneforge bench methods` from a RunConfig (BENCH_METHODS_PRESETS already applied)."""
        refuse_set(cfg, OWN_KEYS, "tuneforge bench methods")
        dump = cfg.model_dump(mode="json")
        # only the method parameters the config sets: each method takes its own (an unknown one fails its row)
        params = {k: v for k, v in cfg.method.model_dump(mode="json", exclude_unset=True).items() if k != "name"}
        return cls(
            methods=list(cfg.bench.methods),
            model=cfg.model.path,
            steps=cfg.train.max_steps,
            batch_size=cfg.train.batch_size,
            cutoff_len=cfg.data.cutoff_len,
            lr=cfg.train.lr,
            score_items=cfg.eval.limit,
            seed=cfg.train.seed,
            threads=cfg.train.threads,
            base={"model": dump["model"], "data": dump["data"], "method": params, "train": dump["train"]},
        )


def method_lr(method: str, lr: float) -> float:
    return lr / 10 if method in FULL_WEIGHT else lr


def base_config(s: BenchSettings, method: str, runs_dir: Path) -> dict[str, Any]:
    """The config every method shares; only method.name (and the lr of full-weight methods) differ."""
    base_data, base_train = s.base.get("data", {}), s.base.get("train", {})
    return {
        "name": method,
        "stage": "sft",
        "model": {**s.base.get("model", {}), "path": s.model},
        "data": {
            **base_data,
            "datasets": [{"name": "iso_dates"}],
            "cutoff_len": s.cutoff_len,
            "seed": base_data.get("seed", s.seed),
        },
        "method": {**s.base.get("method", {}), "name": method},
        "train": {
            "lr_scheduler": "constant",
            **base_train,
            "max_steps": s.steps,
            "batch_size": s.batch_size,
            "lr": method_lr(method, s.lr),
            "seed": s.seed,
            "logging_steps": 1,
            "save_steps": 0,
            "resume": False,
            **({"threads": s.threads} if s.threads else {}),
        },
        "output": {"dir": str(runs_dir)},
        "eval": {
            "tasks": [
                {
                    "type": "generation",
                    "format": "alpaca",
                    "path": str(SHIPPED_DIR / "iso_dates_test.json"),
                    "name": "iso_dates",
                    "metrics": ["exact_match"],
                    "max_new_tokens": 14,
                }
            ],
            "base": False,
            "limit": s.score_items,
            "seed": s.seed,
            "bootstrap": 0,
        },
    }


def run_method(s: BenchSettings, method: str, out: Path) -> dict[str, Any]:
    """Train and score one method in a child process; the row (status ok or failed) for the table."""
    for sub in ("specs", "results", "logs", "runs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    spec = {"config": base_config(s, method, out / "runs"), "overrides": list(s.overrides)}
    spec_path, result_path = out / "specs" / f"{method}.json", out / "results" / f"{method}.json"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    error = check_config(spec)
    if error:  # a config mistake (unknown method, a key it does not take) costs no process start
        return make_row(method, method_lr(method, s.lr), {"error": error, "wall_s": 0.0}, s.pscp)
    cmd = [sys.executable, "-m", "tuneforge.bench.worker", str(spec_path), str(result_path)]
    started = time.perf_counter()
    log.info("bench: %s", method)
    with (out / "logs" / f"{method}.log").open("w", encoding="utf-8") as logf:
        try:
            proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=s.timeout_s, env=os.environ)
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {s.timeout_s:.0f} s"
    record: dict[str, Any] = {}
    if result_path.exists():
        record = json.loads(result_path.read_text(encoding="utf-8"))
    if code != 0 and "error" not in record:
        record["error"] = f"worker exit {code}; see logs/{method}.log"
    record.setdefault("wall_s", round(time.perf_counter() - started, 1))
    return make_row(method, method_lr(method, s.lr), record, s.pscp)


def check_config(spec: dict[str, Any]) -> str | None:
    from tuneforge.stages import load_config

    try:
        load_config(spec["config"], spec["overrides"])
    except Exception as e:  # any invalid config is that method's failed row
        return f"{type(e).__name__}: {e}"
    return None


def make_row(method: str, lr: float, record: dict[str, Any], c: PscpConstants) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update({k: v for k, v in record.items() if k in row})
    row.update(method=method, lr=lr, status="failed" if record.get("error") else "ok")
    if row["trainable_params"] is not None and row["total_params"]:
        row["trainable_pct"] = round(100 * row["trainable_params"] / row["total_params"], 4)
    if row["status"] == "ok" and None not in (row["score"], row["trainable_params"], row["peak_rss_mb"]):
        flops = row["flops_per_step"] or 0  # a failed FLOP count is logged in the result file, counted as 0
        row["pscp"] = round(pscp(row["score"], row["trainable_params"], flops, row["peak_rss_mb"], c), 4)
    if row["error"]:
        row["error"] = str(row["error"]).replace("\n", " ")[:300]
    return row


def bench_methods(s: BenchSettings, out: Path) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in s.methods:
        rows.append(run_method(s, method, out))
        write_outputs(rows, s, out)  # after every method: a partial table survives an interruption
        r = rows[-1]
        log.info("bench: %s %s score=%s pscp=%s %s", method, r["status"], r["score"], r["pscp"], r["error"] or "")
    return rows


def settings_dict(s: BenchSettings) -> dict[str, Any]:
    d = {k: v for k, v in s.__dict__.items() if k != "pscp"}
    d["methods"], d["overrides"] = list(s.methods), list(s.overrides)
    return d | {"pscp_constants": s.pscp.as_dict()}


def write_outputs(rows: list[dict[str, Any]], s: BenchSettings, out: Path) -> None:
    with (out / "bench.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (out / "bench.json").write_text(json.dumps({"settings": settings_dict(s), "rows": rows}, indent=2))
    (out / "bench.md").write_text(markdown(rows, s), encoding="utf-8")
    plot(rows, out / "bench.png")


def _fmt(v: Any, kind: str = "") -> str:
    if v is None:
        return "—"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "g":
        return f"{v / 1e9:.1f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown(rows: list[dict[str, Any]], s: BenchSettings) -> str:
    c = s.pscp
    lines = [
        f"## tuneforge bench methods: {s.model}, {s.steps} steps × batch {s.batch_size}, cutoff {s.cutoff_len}, "
        f"seed {s.seed}",
        "",
        f"Score: exact match on {s.score_items or 'all'} held-out iso_dates_test items (greedy, tuneforge.eval). "
        f"PSCP = score·(1+params/Cp)^-β·(1+FLOPs/Cf)^-β·(1+RSS/Cm)^-β with Cp={c.cp:g}, Cf={c.cf:g} FLOPs, "
        f"Cm={c.cm:g} MB, β={c.beta:g}; FLOPs = one training step (forward+backward) under "
        "torch.utils.flop_counter.FlopCounterMode; peak RSS = the method's own process at the end of training "
        "(imports, loading and training); train peak = the RSS high-water mark while training alone (reset when "
        "training starts).",
        "",
        "| method | status | lr | trainable | % | peak RSS MB | train peak MB | model MB | tokens/s | train s | loss "
        "| score | GFLOPs/step | PSCP |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['status']} | {r['lr']:g} | {_fmt(r['trainable_params'], 'int')} "
            f"| {_fmt(r['trainable_pct'])} | {_fmt(r['peak_rss_mb'])} | {_fmt(r['train_peak_rss_mb'])} "
            f"| {_fmt(r['model_mb'])} "
            f"| {_fmt(r['tokens_per_s'])} | {_fmt(r['train_s'])} | {_fmt(r['final_loss'])} | {_fmt(r['score'])} "
            f"| {_fmt(r['flops_per_step'], 'g')} | {_fmt(r['pscp'])} |"
        )
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed:", ""] + [f"- {r['method']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(rows) + 2), 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["score"] or 0 for r in rows], 0.4, label="score (exact match)")
    ax.bar([x + 0.2 for x in xs], [r["pscp"] or 0 for r in rows], 0.4, label="PSCP")
    ax.set_xticks(list(xs), [r["method"] + ("" if r in ok else "\n(failed)") for r in rows], rotation=45)
    ax.set_ylim(0, 1)
    ax.set_ylabel("0-1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
