"""Utility vs privacy on the embedded model (docs/privacy.md, issue 16): one task, one held-out split, the arms
non-private, DP-SGD at epsilon 8 / 3 / 1, and public-selection training at epsilon 1; then the leakage audits.

    python bench/privacy_study.py [--out runs/privacy-study] [--arms a,b,...] [--threads 2]

The task is the ISO-date skill (the embedded model scores 0 on it; a LoRA run ~0.9), generated larger than the
shipped set so DP has a population to hide in: 800 private training dates, 200 held-out dates never trained on
(disjoint dates, other seeds than the shipped files). Each arm is one `tuneforge train` run under OUT/runs/; an
arm whose run finished (result.json) is not rerun, so the study resumes per arm after a stopped session. The
held-out scores come from one `tuneforge eval` over all finished arms (paired 95% intervals against the base).
Progress goes to OUT/study.log (each arm's own log beside it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tuneforge.data.synthetic.generate import iso_date_records

N_TRAIN, N_TEST = 800, 200
BASE = """\
stage: sft
model:
  path: embedded
data:
  datasets:
    - name: iso_private
  cutoff_len: 96
method:
  name: lora
  r: 16
  alpha: 32
  dropout: 0.0
  target_modules: all-linear
train:
  batch_size: 32
  epochs: 2
  lr_scheduler: constant
  warmup_ratio: 0.0
  logging_steps: 1
  save_steps: 10
"""
CANARIES = ["data.canaries.count=5"]
# arm -> its own overrides (the DP arms: opacus' accountant picks the noise for the target epsilon)
ARMS: dict[str, list[str]] = {
    "nonprivate": ["train.lr=1.0e-3"],
    # the same as nonprivate, with canaries (5 secrets each inserted 1, 4 and 16 times) for `tuneforge audit`
    "nonprivate-canaries": ["train.lr=1.0e-3", *CANARIES],
    "dp-eps8": ["train.lr=3.0e-3", "privacy.epsilon=8", "privacy.max_grad_norm=1.0", *CANARIES],
    "dp-eps3": ["train.lr=3.0e-3", "privacy.epsilon=3", "privacy.max_grad_norm=1.0"],
    "dp-eps1": ["train.lr=3.0e-3", "privacy.epsilon=1", "privacy.max_grad_norm=1.0"],
}
# public-selection training at epsilon 1 (HARDLLM's first half): the private set only steers, through one noised
# cluster histogram, which public samples are drawn; the model trains on those public samples alone. The pool is
# examples/dp_select.yaml's (8,369 rows): ARC-Easy, BoolQ, OpenBookQA and math_10k read in place from
# ../shared/data, the shipped identity set, and the 96 date prompts of the shipped iso_dates_pref with their chosen
# answers (none of their dates is among the 200 held-out ones). 96 are drawn, the pool's count of date samples.
SELECT_ARM = "dp-select-eps1"
SHARED = "../shared/data/llm_adapters"
POOL = [
    f"{SHARED}/dataset/ARC-Easy/train.json",
    f"{{path: {SHARED}/dataset/boolq/train.json, max_samples: 2000}}",
    f"{{path: {SHARED}/dataset/openbookqa/train.json, max_samples: 2000}}",
    f"{{path: {SHARED}/ft-training_set/math_data.json, max_samples: 2000}}",
    "identity",
    "{path: src/tuneforge/data/synthetic/iso_dates_pref.json, columns: {response: chosen}}",
]
# its training: examples/dp_select.yaml's (few, longer public rows: smaller batches, longer cutoff)
SELECT_TRAIN = [
    "train.lr=1.0e-3",
    "train.batch_size=4",
    "train.epochs=3",
    "train.lr_scheduler=cosine",
    "train.warmup_ratio=0.05",
    "data.cutoff_len=384",
    "data.variables={name: Forge, author: the tuneforge team}",
]


def write_data(folder: Path) -> None:
    """The private training set and the held-out set (alpaca JSON) with their dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[int, int, int]] = set()
    test = iso_date_records(seed=102, n=N_TEST, exclude=seen)
    train = iso_date_records(seed=101, n=N_TRAIN, exclude=seen)  # `seen` now holds the test dates: disjoint
    (folder / "iso_private.json").write_text(json.dumps(train, ensure_ascii=False, indent=1), encoding="utf-8")
    (folder / "iso_heldout.json").write_text(json.dumps(test, ensure_ascii=False, indent=1), encoding="utf-8")
    info = {"iso_private": {"file_name": "iso_private.json"}, "iso_heldout": {"file_name": "iso_heldout.json"}}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")


def log(out: Path, msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with (out / "study.log").open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def run_arm(out: Path, arm: str, overrides: list[str], threads: int) -> bool:
    run = out / "runs" / arm
    if (run / "result.json").is_file():
        log(out, f"{arm}: done before, kept")
        return True
    resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
    args = [
        sys.executable,
        "-m",
        "tuneforge.cli",
        "train",
        str(out / "study.yaml"),
        f"name={arm}",
        f"output.dir={out / 'runs'}",
        *([] if any(o.startswith("data.dataset_dir=") for o in overrides) else [f"data.dataset_dir={out / 'data'}"]),
        f"train.threads={threads}",
        *overrides,
        *(["train.resume=true"] if resume else []),
    ]
    log(out, f"{arm}: {'resuming' if resume else 'training'}: {' '.join(args[4:])}")
    t0 = time.time()
    with (out / f"{arm}.log").open("a", encoding="utf-8") as f:
        rc = subprocess.call(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log(out, f"{arm}: exit {rc} after {time.time() - t0:.0f} s")
    return rc == 0


def select_overrides(out: Path) -> list[str] | None:
    """Run `tuneforge data select` once (kept in OUT/select for a resumed study); the training overrides that
    point the study's config at the selection, or None if the selection failed."""
    folder = out / "select"
    if not (folder / "selection.json").is_file():
        private = str(out / "data" / "iso_private.json")
        args = [sys.executable, "-m", "tuneforge.cli", "data", "select", "--private", private]
        args += [x for pub in POOL for x in ("--public", pub)]
        args += ["--n", "96", "--epsilon", "1", "--name", "select", "--out", str(folder)]
        if folder.exists():
            args.append("--overwrite")
        log(out, f"{SELECT_ARM}: selecting: {' '.join(args[3:])}")
        with (out / f"{SELECT_ARM}.log").open("a", encoding="utf-8") as f:
            rc = subprocess.call(args, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if rc != 0:
            log(out, f"{SELECT_ARM}: data select exit {rc}")
            return None
    report = json.loads((folder / "selection.json").read_text(encoding="utf-8"))
    names = ", ".join(f"{{name: {name}}}" for name in report["datasets"])
    return [*SELECT_TRAIN, f"data.dataset_dir={folder}", f"data.datasets=[{names}]"]


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _ci(e: dict[str, Any], signed: bool = False) -> str:
    f = (lambda x: f"{x:+.3f}") if signed else (lambda x: f"{x:.3f}")
    return f"{f(e['value'])} [{f(e['ci95_low'])}, {f(e['ci95_high'])}]"


def report(out: Path) -> str:
    """OUT/study.md: per arm its privacy accounting and training, then the held-out scores of OUT/eval (with the
    paired differences to the base), from the files the arms and the eval wrote."""
    lines = [
        "| arm | steps | noise σ | ε PRV | ε RDP | δ | train wall | final train loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in [*ARMS, SELECT_ARM]:
        res = _json(out / "runs" / arm / "result.json")
        if res is None:
            ckpts = sorted((out / "runs" / arm / "checkpoints").glob("checkpoint-*"), key=lambda c: int(c.name[11:]))
            state = f"stopped at {ckpts[-1].name} (resumes)" if ckpts else "not run"
            lines.append(f"| {arm} | {state} | | | | | | |")
            continue
        priv = res.get("privacy")
        if arm == SELECT_ARM and (sel := _json(out / "select" / "selection.json")) is not None:
            priv = {"noise_multiplier": sel.get("noise_multiplier"), "epsilon_prv": sel.get("epsilon_prv")}
            priv |= {"epsilon_rdp": sel.get("epsilon_rdp"), "delta": sel.get("delta")}
        if priv:
            eps = f"{priv['epsilon_prv']:.2f} | {priv['epsilon_rdp']:.2f}"
            acc = f"{priv['noise_multiplier']:.3f} | {eps} | {priv['delta']:.2g}"
        else:
            acc = "0 | ∞ | ∞ | "
        wall = f"{res['seconds'] / 60:.0f} min"
        lines.append(f"| {arm} | {res['steps']} | {acc} | {wall} | {res['train_loss']:.4f} |")
    ev = _json(out / "eval" / "report.json")
    if ev is not None:
        task = ev["tasks"][0]
        metric = task["primary"]
        diffs = {c["model"]: c for c in task["comparisons"] if c["metric"] == metric}
        lines += ["", f"| model | {metric} [95% CI] | − base [95% CI] |", "|---|---|---|"]
        for m in ev["models"]:
            label = m["label"]
            diff = _ci(diffs[label], signed=True) if label in diffs else ""
            lines.append(f"| {label} | {_ci(task['scores'][label][metric])} | {diff} |")
    text = "\n".join(lines) + "\n"
    (out / "study.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/privacy-study")
    p.add_argument("--arms", default=",".join([*ARMS, SELECT_ARM]))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--report", action="store_true", help="only write OUT/study.md from the finished arms and eval")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.report:
        print(report(out), end="")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data" / "dataset_info.json").is_file():
        write_data(out / "data")
    (out / "study.yaml").write_text(BASE, encoding="utf-8")
    for arm in a.arms.split(","):
        if arm == SELECT_ARM:
            overrides = select_overrides(out)
            if overrides is not None:
                run_arm(out, arm, overrides, a.threads)
        elif arm in ARMS:
            run_arm(out, arm, ARMS[arm], a.threads)
        else:
            raise SystemExit(f"--arms: {arm!r} is not one of {', '.join([*ARMS, SELECT_ARM])}")
    # every finished arm is scored, including those of an earlier session
    done = [arm for arm in [*ARMS, SELECT_ARM] if (out / "runs" / arm / "result.json").is_file()]
    if a.no_eval or not done:
        return 0
    eval_cfg = {
        "name": "privacy-eval",
        "model": {"path": "embedded"},
        "eval": {
            "output_dir": str(out / "eval"),
            "runs": [str(out / "runs" / arm) for arm in done],
            "tasks": [
                {
                    "name": "iso_heldout",
                    "type": "generation",
                    "format": "alpaca",
                    "path": str(out / "data" / "iso_heldout.json"),
                    "metrics": ["exact_match"],
                    "max_new_tokens": 16,
                }
            ],
        },
    }
    (out / "eval.yaml").write_text(yaml.safe_dump(eval_cfg, sort_keys=False), encoding="utf-8")
    log(out, f"eval: base + {', '.join(done)}")
    with (out / "eval.log").open("a", encoding="utf-8") as f:
        rc = subprocess.call(
            [sys.executable, "-m", "tuneforge.cli", "eval", str(out / "eval.yaml")],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    log(out, f"eval: exit {rc}; report in {out / 'eval'}")
    if rc == 0:
        report(out)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
