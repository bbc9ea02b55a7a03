"""One sweep point: `python -m tuneforge.sweep.worker SPEC.json` (local backend), or `run_point` in a Ray trial.

The spec is the point's validated config, whether to score it and where its record goes. The point's run
folder says what to do: train it (new), go on from its last checkpoint (resume), start again (restart: no
checkpoint to go on from) or only read it back and score it (done: result.json is there). The record is the
run's result plus the process's peak RSS and the eval scores; a failure becomes a record with its error.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tuneforge.sweep.folder import (
    STATE_HOW,
    STATE_OVERRIDES,
    point_state,
    read_record,
    spec_main,
    write_failure,
    write_record,
)
from tuneforge.utils.memory import peak_rss_mb

log = logging.getLogger("tuneforge.sweep")

RESULT_KEYS = {  # result.json -> record
    "steps": "steps",
    "train_loss": "train_loss",
    "eval_loss": "eval_loss",
    "tokens_per_s": "tokens_per_s",
    "seconds": "train_s",
    "trainable_params": "trainable_params",
    "total_params": "total_params",
}


class PeakRss(TrainerCallback):
    """The process's peak RSS when training ends (loading included), before saving and scoring."""

    def __init__(self) -> None:
        self.mb: float | None = None

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.mb = round(peak_rss_mb(), 1)


def run_point(spec: dict[str, Any], callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
    """Train (or resume, or read back) and score one point; its record, also written to spec["record"]."""
    from tuneforge.runs import RunDir
    from tuneforge.stages import load_config, run_stage

    started = time.perf_counter()
    cfg = load_config(spec["config"])
    run = RunDir(cfg.run_dir)
    state = point_state(run)
    old = read_record(Path(spec["record"])) if state == "done" else {}
    record: dict[str, Any] = {"name": cfg.name, "run_dir": str(run.root), "how": STATE_HOW[state]}
    if state == "done":
        summary = json.loads(run.result.read_text(encoding="utf-8"))
        record.update({k: old.get(k) for k in ("peak_rss_mb", "wall_s") if old.get(k) is not None})
    else:
        if state == "resume":
            record["how"] = f"resumed from {run.last_checkpoint().name}"  # type: ignore[union-attr]
        if state != "new":
            cfg = load_config(spec["config"], STATE_OVERRIDES[state])
        peak = PeakRss()
        summary = run_stage(cfg, callbacks=[peak, *callbacks]).summary()
        record["peak_rss_mb"] = peak.mb
    record.update({ours: summary.get(theirs) for theirs, ours in RESULT_KEYS.items()})
    if spec.get("scored") and cfg.eval.tasks:
        if old.get("scores") and state == "done":
            record.update({k: old[k] for k in ("scores", "primary", "higher_is_better") if k in old})
        else:
            record.update(score(cfg, run.root))
            record["how"] += " and scored" if state == "done" else ""
    if state != "done" or "wall_s" not in record:
        record["wall_s"] = round(time.perf_counter() - started, 1)
    record["status"] = "ok"
    write_record(Path(spec["record"]), record)
    return record


def score(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """The point's eval tasks on its trained output alone (no base model: that is the same for every point)."""
    from tuneforge.eval import evaluate

    only_this = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"base": False, "runs": []})})
    report = evaluate(only_this, runs=[run_dir], output_dir=run_dir / "eval" / "sweep", progress=False)
    label = report.data["models"][0]["label"]
    scores, primary, higher = {}, {}, {}
    for task in report.data["tasks"]:
        scores[task["name"]] = {m: v["value"] for m, v in task["scores"][label].items()}
        primary[task["name"]] = task["primary"]
        higher[task["name"]] = task["higher_is_better"]
    return {"scores": scores, "primary": primary, "higher_is_better": higher}


def failure(spec: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The record of a point that failed, written where its record goes."""
    return write_failure(spec, error, "name")


def main(argv: list[str]) -> int:
    return spec_main(argv, run_point, failure)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
