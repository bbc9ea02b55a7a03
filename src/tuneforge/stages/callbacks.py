"""Trainer callbacks shared by every stage: JSONL metrics, a live loss plot, readable progress lines."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from tuneforge.runs import RunDir
from tuneforge.utils.plots import plot_loss, plot_rewards

log = logging.getLogger("tuneforge.train")


class RunMetrics(TrainerCallback):
    """Appends every Trainer log to runs/<name>/metrics.jsonl and redraws plots/loss.png (and, for RL stages,
    plots/reward.png) as training goes.

    The Trainer calls it in every process; only rank 0's run folder writes (RunDir.writes), and the logged
    values are already gathered over the ranks by the Trainer."""

    def __init__(self, run: RunDir, title: str, plot_every: int = 10) -> None:
        self.run = run
        self.title = title
        self.plot_every = plot_every
        self._t0 = time.perf_counter()
        self._tokens0 = 0
        self._logs = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any):
        self._t0 = time.perf_counter()
        self._tokens0 = state.num_input_tokens_seen

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ):
        if not logs or not self.run.writes:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key, value in logs.items():
            if isinstance(value, float) and math.isfinite(value):
                record[key] = round(value, 6)
            elif isinstance(value, (int, float, str)):
                record[key] = value
        elapsed = time.perf_counter() - self._t0
        seen = state.num_input_tokens_seen - self._tokens0
        if "loss" in record and elapsed > 0 and seen:
            record["tokens_per_s"] = round(seen / elapsed, 1)
        self.run.append_metrics(record)
        self._logs += 1
        if "loss" in record and self._logs % self.plot_every == 0:
            plot_loss(self.run.read_metrics(), self.run.plots / "loss.png", self.title)
            if "reward" in record:
                plot_rewards(self.run.read_metrics(), self.run.plots / "reward.png", self.title)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any):
        if not self.run.writes:
            return
        path = plot_loss(self.run.read_metrics(), self.run.plots / "loss.png", self.title)
        if path is not None:
            log.info("loss curve: %s", path)
        rewards = plot_rewards(self.run.read_metrics(), self.run.plots / "reward.png", self.title)
        if rewards is not None:
            log.info("reward curve: %s", rewards)


# Trainer log keys -> short labels for the progress line; anything else is left out of the line (it is in
# metrics.jsonl in full).
# reward: the mean reward of RL stages (grpo), which is what a person watches there rather than the loss
_SHOWN = {"loss": "loss", "reward": "reward", "eval_loss": "eval_loss", "grad_norm": "grad", "learning_rate": "lr"}


class ReadableProgress(ProgressCallback):
    """The Trainer's progress bar, with one short line per log instead of a raw dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if not (state.is_world_process_zero and self.training_bar is not None and logs):
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        parts += [f"{label} {logs[key]:.4g}" for key, label in _SHOWN.items() if isinstance(logs.get(key), float)]
        if "train_tokens_per_second" in logs and "loss" in logs:
            parts.append(f"{float(logs['train_tokens_per_second']):.0f} tok/s")
        if "train_loss" in logs:
            parts = [
                f"finished {state.global_step} steps in {logs.get('train_runtime', 0):.0f} s",
                f"mean loss {logs['train_loss']:.4g}",
            ]
        self.training_bar.write(" | ".join(parts))
