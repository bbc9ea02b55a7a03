"""The Ray Tune backend (`sweep.backend: ray`): the same grid as `tune.grid_search`, ASHA early stopping on the
loss reported at every logged step, resumable through `Tuner.restore` from `<out>/ray/`.

Each trial trains its point in the Ray worker process with `worker.run_point` (the local backend's code), so a
point finished by either backend is read back by the other, and its run folder is an ordinary tuneforge run.
ASHA needs a value at every step: it stops trials on train_loss, or on eval_loss when that is the metric (then
at each evaluation, train.eval_steps); an eval task's score exists only once a point is trained, so it ranks
the finished points but cannot stop one early. Ray's own trial checkpoints are not used: a restarted trial
resumes from its run folder's last checkpoint (train.save_steps), as a local point does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from tuneforge.sweep.folder import SweepFolder, write_record
from tuneforge.sweep.plan import LOSSES, Plan, Point, SweepError

Done = Callable[[Point, dict[str, Any]], None]
NO_STEP_LIMIT = 10**9  # ASHA's max_t when a point trains by epochs (its step count is not known up front)


def _import_ray() -> Any:
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise SweepError(
            "sweep.backend=ray needs Ray Tune, which is not installed: pip install 'tuneforge[ray]' "
            "(or use sweep.backend=local)"
        ) from e
    return ray, tune


def point_key(values: dict[str, Any], keys: list[str]) -> str:
    return json.dumps([values[k] for k in keys], sort_keys=True)


class TuneReport(TrainerCallback):
    """Reports the losses to Ray Tune at every logged step (train_loss) or evaluation (eval_loss)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.last: dict[str, float] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        for theirs, ours in (("loss", "train_loss"), ("eval_loss", "eval_loss")):
            if isinstance(logs.get(theirs), (int, float)):
                self.last[ours] = float(logs[theirs])
        if ("loss" if self.metric == "train_loss" else "eval_loss") in logs:
            from ray import tune

            tune.report({"step": state.global_step, **self.last})


def ray_trial(config: dict[str, Any], specs: dict[str, dict[str, Any]], keys: list[str], cwd: str, metric: str) -> None:
    """One Ray Tune trial: the point whose values Ray chose, trained through run_point."""
    from ray import tune

    from tuneforge.sweep.worker import failure, run_point
    from tuneforge.utils.logs import offline_env, setup_logging

    os.chdir(cwd)  # the config's relative paths are the sweep's (Ray starts a trial in its own folder)
    offline_env()
    setup_logging(False)
    spec = specs[point_key(config, keys)]
    reporter = TuneReport(metric)
    try:
        record = run_point(spec, callbacks=[reporter])
    except Exception as e:
        failure(spec, e)
        raise  # an errored trial: Tuner.restore starts it again
    final = {k: record[k] for k in LOSSES if isinstance(record.get(k), (int, float))}
    final.setdefault(metric, reporter.last.get(metric, math.inf))  # ASHA reads it in every report
    tune.report({"step": record.get("steps") or 0, **final, "finished": True})


class TrialName:
    """Trial names and folders after the points (`<name>-r8-lr1e-4`); picklable, as Tuner saves its config."""

    def __init__(self, names: dict[str, str], keys: list[str]) -> None:
        self.names = names
        self.keys = keys

    def __call__(self, trial: Any) -> str:
        return self.names.get(point_key(trial.config, self.keys), trial.trial_id)


def run_ray(plan: Plan, folder: SweepFolder, done: Done) -> None:
    ray, tune = _import_ray()
    from ray.tune.schedulers import ASHAScheduler

    s, keys = plan.settings, plan.keys
    metric = plan.metric if plan.metric in LOSSES else "train_loss"
    specs = {
        point_key(p.values, keys): {
            "name": p.name,
            "config": p.config,
            "scored": plan.scored(p),
            "record": str(folder.record_path(p.name).resolve()),
        }
        for p in plan.points
    }
    names = {point_key(p.values, keys): p.name for p in plan.points}
    # One experiment per set of points: an extended grid is a new experiment whose finished points read back.
    experiment = "grid-" + hashlib.sha1(json.dumps(sorted(names.values())).encode()).hexdigest()[:10]
    storage = folder.ray.resolve()
    trainable = tune.with_resources(
        tune.with_parameters(ray_trial, specs=specs, keys=keys, cwd=os.getcwd(), metric=metric),
        {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial},
    )
    started = not ray.is_initialized()
    if started:
        ray.init(address=s.ray_address, include_dashboard=False, log_to_driver=False)
    try:
        if tune.Tuner.can_restore(storage / experiment):
            tuner = tune.Tuner.restore(
                str(storage / experiment), trainable, resume_unfinished=True, restart_errored=True
            )
        else:
            steps = [p.config["train"]["max_steps"] for p in plan.points]
            max_t = NO_STEP_LIMIT if min(steps) <= 0 else max(steps) + 1  # + 1: ASHA stops a trial at max_t
            asha = ASHAScheduler(
                time_attr="step",
                metric=metric,
                mode="min",
                max_t=max_t,
                grace_period=min(s.asha_grace_period, max_t),
                reduction_factor=s.asha_reduction_factor,
            )
            tuner = tune.Tuner(
                trainable,
                param_space={k: tune.grid_search(v) for k, v in plan.grid.items()},
                tune_config=tune.TuneConfig(
                    scheduler=asha,
                    max_concurrent_trials=s.max_concurrent,
                    trial_name_creator=TrialName(names, keys),
                    trial_dirname_creator=TrialName(names, keys),
                ),
                run_config=tune.RunConfig(name=experiment, storage_path=str(storage), verbose=0),
            )
        results = {point_key(r.config, keys): r for r in tuner.fit()}
    finally:
        if started:
            ray.shutdown()
    for p in plan.points:
        done(p, trial_record(folder, p, results.get(point_key(p.values, keys))))


def trial_record(folder: SweepFolder, point: Point, result: Any) -> dict[str, Any]:
    """A trial's record: its point's own (finished), its error (failed), or its last report (stopped by ASHA)."""
    record = folder.read_record(point.name) or {}
    run = folder.run(point.name)
    if record.get("status") == "ok" and run.result.is_file():
        return record
    if result is None:
        return {"status": "pending"}
    if result.error is not None:
        if record.get("status") == "failed":
            return record
        return {"name": point.name, "status": "failed", "error": str(result.error).strip().splitlines()[-1][:300]}
    m = result.metrics or {}
    stopped = {
        "name": point.name,
        "status": "stopped",
        "how": f"stopped by ASHA at step {m.get('step')}",
        "steps": m.get("step"),
        "train_loss": m.get("train_loss"),
        "eval_loss": m.get("eval_loss"),
        "run_dir": str(run.root),
    }
    write_record(folder.record_path(point.name), stopped)
    return stopped
