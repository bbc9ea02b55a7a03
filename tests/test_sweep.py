"""`tuneforge sweep`: grid expansion and names, bad grids refused up front, a local sweep of 1-step runs on the
tiny model (every output, resume, a failing point), and the Ray Tune backend where Ray is installed."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.test_sft import cfg_file, make_cfg
from tuneforge.cli import load_config, main
from tuneforge.errors import TuneforgeError
from tuneforge.sweep import SweepError, expand_grid, plan_sweep, point_names, run_sweep
from tuneforge.sweep.folder import SweepFolder, point_state
from tuneforge.sweep.plan import format_value


def sweep_cfg(tmp_path: Path, model_dir: Path, grid: dict[str, Any], steps: int = 1, **sweep: Any) -> Any:
    raw = make_cfg(
        tmp_path,
        model_dir,
        name="study",
        train={"max_steps": steps, "batch_size": 2, "threads": 1},
        sweep={"grid": grid, "out": str(tmp_path / "sweep"), **sweep},
    )
    return load_config(cfg_file(tmp_path, raw), [])


# --- grid expansion and names (hand-checked) ----------------------------------------------------------------


def test_grid_expands_to_the_cartesian_product_in_key_order() -> None:
    grid = {"method.r": [4, 8], "train.lr": ["1e-4", 3e-4], "method.name": ["lora"]}
    assert expand_grid(grid) == [
        {"method.r": 4, "train.lr": "1e-4", "method.name": "lora"},
        {"method.r": 4, "train.lr": 3e-4, "method.name": "lora"},
        {"method.r": 8, "train.lr": "1e-4", "method.name": "lora"},
        {"method.r": 8, "train.lr": 3e-4, "method.name": "lora"},
    ]
    assert point_names("study", grid) == [
        "study-r4-lr1e-4-lora",
        "study-r4-lr3e-4-lora",
        "study-r8-lr1e-4-lora",
        "study-r8-lr3e-4-lora",
    ]


def test_names_are_readable_and_unique() -> None:
    assert format_value(0.0001) == "1e-4" and format_value(0.5) == "0.5" and format_value(2.0) == "2"
    assert format_value(1.5e-5) == "1.5e-5" and format_value(True) == "true"
    names = point_names(
        "s", {"data.packing": [True, False], "method.target_modules": [["q_proj"], ["q_proj", "v_proj"]]}
    )
    assert names == [
        "s-packing_true-target_modules_q_proj",
        "s-packing_true-target_modules_q_proj_v_proj",
        "s-packing_false-target_modules_q_proj",
        "s-packing_false-target_modules_q_proj_v_proj",
    ]
    # two keys ending alike keep their whole path; values that clean up alike get a stable hash
    assert point_names("s", {"method.r": [4], "vocab.r": [2]}) == ["s-method_r4-vocab_r2"]
    clash = point_names("s", {"data.variables.name": ["a/b", "a_b"]})
    assert len(set(clash)) == 2 and all(n.startswith("s-a_b-") for n in clash)
    assert clash == point_names("s", {"data.variables.name": ["a/b", "a_b"]})


def test_plan_validates_every_point_and_writes_its_config(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [2, 4], "train.lr": "1e-3,3e-3"})
    plan = plan_sweep(cfg)
    assert [p.name for p in plan.points] == ["study-r2-lr1e-3", "study-r2-lr3e-3", "study-r4-lr1e-3", "study-r4-lr3e-3"]
    p = plan.points[1]
    assert p.config["method"]["r"] == 2 and p.config["train"]["lr"] == 3e-3 and p.config["name"] == p.name
    assert p.config["output"]["dir"] == str(tmp_path / "sweep" / "runs") and "sweep" not in p.config
    assert plan.metric == "train_loss" and plan.mode == "min"  # no validation split: train loss
    assert "r" not in plan.identity["method"] and "lr" not in plan.identity["train"]


def test_cli_grid_flags_are_the_sweep_keys(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, name="study", sweep={"grid": {"method.r": [16]}, "metric": "train_loss"})
    path = cfg_file(tmp_path, raw)
    from_flags = load_config(path, ["sweep.grid.method.r=2,4", "sweep.grid.train.lr=1e-3", "sweep.mode=max"])
    assert from_flags.sweep.grid == {"method.r": [2, 4], "train.lr": ["1e-3"]}  # the flag replaces the file's r
    assert from_flags.sweep.mode == "max" and from_flags.sweep.metric == "train_loss"


# --- bad grids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"method.rr": [4]}, "grid key 'method.rr' is not a config key: unknown key 'method.rr' (did you mean 'r'?)"),
        ({"trian.lr": [1e-3]}, "grid key 'trian.lr' is not a config key"),
        ({"train.lr.x": [1]}, "grid key 'train.lr.x' is not a config key"),
        ({"name": ["a", "b"]}, "the sweep sets it itself"),
        ({"train.resume": [True]}, "the sweep sets it itself"),
        ({}, "nothing to sweep"),
    ],
)
def test_bad_grid_keys_are_refused(tmp_path: Path, tiny_model_dir: Path, grid: dict[str, Any], message: str) -> None:
    cfg = sweep_cfg(tmp_path, tiny_model_dir, grid)
    with pytest.raises(SweepError) as e:
        plan_sweep(cfg)
    assert message in str(e.value) and isinstance(e.value, TuneforgeError)


def test_empty_and_repeated_values_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    for grid, message in (({"method.r": []}, "method.r has no values"), ({"method.r": [4, 4]}, "lists 4 twice")):
        with pytest.raises(TuneforgeError, match=message):
            sweep_cfg(tmp_path, tiny_model_dir, grid)


def test_every_bad_point_is_named_before_anything_trains(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [0, 4], "train.batch_size": [-1, 2]})
    with pytest.raises(SweepError) as e:
        plan_sweep(cfg)
    text = str(e.value)
    assert text.startswith("3 of 4 sweep points are not valid runs")
    assert "point study-r0-batch_size-1 (method.r=0, train.batch_size=-1)" in text
    assert "point study-r4-batch_size-1" in text and "point study-r0-batch_size2" in text
    assert "study-r4-batch_size2" not in text
    assert not (tmp_path / "sweep").exists()


def test_bad_metric_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(SweepError, match="needs a validation split"):
        plan_sweep(sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [2]}, metric="eval_loss"))
    with pytest.raises(SweepError, match=r"neither a loss nor an eval task.*did you mean 'train_loss'"):
        plan_sweep(sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [2]}, metric="train_los"))


def test_a_folder_holding_another_sweep_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tuneforge.sweep.folder import open_folder
    from tuneforge.sweep.report import make_row, write_outputs

    plan = plan_sweep(sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [2, 4]}))
    write_outputs(plan, open_folder(plan), [make_row(plan, p, None) for p in plan.points], "running")
    # the same sweep with a longer grid reopens it; a different base config does not
    open_folder(plan_sweep(sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [2, 4, 8]})))
    other = load_config(cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir, name="study")), [])
    other_plan = plan_sweep(
        other.model_copy(
            update={"sweep": other.sweep.model_copy(update={"grid": {"method.r": [2]}, "out": str(tmp_path / "sweep")})}
        )
    )
    with pytest.raises(SweepError, match="holds another sweep's runs: its config differs from this one at train"):
        open_folder(other_plan)
    (tmp_path / "not-a-sweep").mkdir()
    (tmp_path / "not-a-sweep" / "notes.txt").write_text("x")
    elsewhere = sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [2]}, out=str(tmp_path / "not-a-sweep"))
    with pytest.raises(SweepError, match="not a tuneforge sweep folder"):
        open_folder(plan_sweep(elsewhere))


# --- local sweeps on the tiny model -------------------------------------------------------------------------


def _mtimes(folder: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in (folder / "runs").glob("*/result.json")}


def test_local_sweep_writes_every_output_and_resumes(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = {"max_steps": 2, "batch_size": 2, "threads": 1, "save_steps": 1}  # checkpoints to resume from
    raw = make_cfg(tmp_path, tiny_model_dir, name="study", train=train)
    path = cfg_file(tmp_path, raw)
    out = tmp_path / "sweep"
    argv = ["sweep", str(path), "--grid", "method.r=2,4", "--grid", "train.lr=1e-3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| method.r | train.lr | status | train_loss |" in printed and "(best)" in printed

    names = ["study-r2-lr1e-3", "study-r4-lr1e-3"]
    for name in names:
        assert (out / "runs" / name / "result.json").is_file() and (out / "runs" / name / "adapter").is_dir()
    with (out / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["point"] for r in rows] == names and [r["method.r"] for r in rows] == ["2", "4"]
    assert all(r["status"] == "ok" and r["how"] == "trained" and float(r["train_loss"]) > 0 for r in rows)
    assert all(float(r["peak_rss_mb"]) > 0 and int(r["trainable_params"]) > 0 and r["steps"] == "2" for r in rows)
    assert int(rows[1]["trainable_params"]) == 2 * int(rows[0]["trainable_params"])  # LoRA params grow with r
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["state"] == "finished" and saved["best"] in names and saved["settings"]["grid"]["method.r"] == [2, 4]
    assert saved["settings"]["metric"] == "train_loss" and saved["settings"]["mode"] == "min"
    md = (out / "sweep.md").read_text()
    assert "Metric: train_loss (lower is better)" in md and md.count("| ok") == 2
    assert (out / "sweep.png").stat().st_size > 1000

    # again: nothing reruns, every row is read back
    before = _mtimes(out)
    assert main(argv) == 0
    rows2 = json.loads((out / "sweep.json").read_text())["rows"]
    assert [r["how"] for r in rows2] == ["read back", "read back"] and _mtimes(out) == before
    assert [r["train_loss"] for r in rows2] == [r["train_loss"] for r in saved["rows"]]

    # one point is as if cut off after step 1 (no result.json, no last checkpoint): only it runs again, from step 1
    (out / "runs" / names[0] / "result.json").unlink()
    shutil.rmtree(out / "runs" / names[0] / "checkpoints" / "checkpoint-2")
    assert point_state(SweepFolder(out).run(names[0])) == "resume"
    assert main(argv) == 0
    rows3 = json.loads((out / "sweep.json").read_text())["rows"]
    assert rows3[0]["how"] == "resumed from checkpoint-1" and rows3[1]["how"] == "read back"
    assert rows3[0]["steps"] == 2 and rows3[0]["train_loss"] == pytest.approx(saved["rows"][0]["train_loss"], abs=1e-4)
    assert (out / "runs" / names[0] / "result.json").is_file()
    assert _mtimes(out)[names[1]] == before[names[1]]


def test_a_failing_point_is_a_failed_row_and_the_others_finish(tmp_path: Path, tiny_model_dir: Path) -> None:
    # both points are valid configs; the second fails in training (transformers does not know the optimiser)
    # the good point is also scored on an eval task, the sweep's metric
    cfg = sweep_cfg(tmp_path, tiny_model_dir, {"train.optim": ["not_an_optimizer", "adamw_torch"]}, metric="sums")
    task = {"type": "generation", "format": "alpaca", "path": str(tmp_path / "train.jsonl"), "name": "sums"}
    evaluation = {"tasks": [{**task, "metrics": ["exact_match"], "max_new_tokens": 4}], "limit": 2, "bootstrap": 0}
    cfg = load_config(cfg.model_dump(mode="json"), [f"eval={json.dumps(evaluation)}"])
    outcome = run_sweep(cfg)
    bad, good = outcome.rows
    assert bad["status"] == "failed" and "not_an_optimizer" in bad["error"] and bad["how"] is None
    assert good["status"] == "ok" and good["train_loss"] > 0 and not outcome.ok
    assert good["how"] == "trained" and good["metric"] == good["sums:exact_match"] and 0 <= good["metric"] <= 1
    assert outcome.best is good and (Path(good["run_dir"]) / "eval" / "sweep" / "report.json").is_file()
    saved = json.loads((outcome.folder.root / "sweep.json").read_text())
    assert saved["settings"]["mode"] == "max"  # exact match: higher is better, from the task
    md = (outcome.folder.root / "sweep.md").read_text()
    assert "| not_an_optimizer | failed |" in md and "Failed:" in md
    assert (outcome.folder.root / "logs" / f"{bad['point']}.log").is_file()


# --- Ray Tune -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_backend_runs_the_grid_with_asha_and_restores(tmp_path: Path, tiny_model_dir: Path) -> None:
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'tuneforge[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # the tiny model memorises fastest at a huge lr: the slow second point trails at ASHA's rung of step 2
        grid = {"train.lr": [5.0, "1e-3"]}
        cfg = sweep_cfg(tmp_path, tiny_model_dir, grid, steps=4, backend="ray", max_concurrent=1)
        outcome = run_sweep(cfg)
        first, second = outcome.rows
        assert first["status"] == "ok" and first["steps"] == 4, first["error"]
        assert second["status"] == "stopped" and second["how"] == "stopped by ASHA at step 2", second["error"]
        assert second["train_loss"] > first["train_loss"]
        out = outcome.folder.root
        assert (out / "sweep.png").stat().st_size > 1000 and (out / "sweep.csv").is_file()
        assert any((out / "ray").iterdir())
        before = _mtimes(out)
        again = run_sweep(cfg)  # Tuner.restore: the finished experiment runs nothing
        assert [r["status"] for r in again.rows] == [first["status"], second["status"]] and _mtimes(out) == before
    finally:
        ray.shutdown()


def test_a_trial_stopped_by_asha_is_a_stopped_row(tmp_path: Path, tiny_model_dir: Path) -> None:
    from types import SimpleNamespace

    from tuneforge.sweep.folder import open_folder
    from tuneforge.sweep.ray_tune import trial_record

    plan = plan_sweep(sweep_cfg(tmp_path, tiny_model_dir, {"method.r": [2]}))
    folder = open_folder(plan)
    point = plan.points[0]
    stopped = trial_record(folder, point, SimpleNamespace(error=None, metrics={"step": 2, "train_loss": 7.5}))
    assert stopped["status"] == "stopped" and stopped["how"] == "stopped by ASHA at step 2"
    assert folder.read_record(point.name) == stopped
    failed = trial_record(folder, point, SimpleNamespace(error=RuntimeError("boom\nValueError: bad"), metrics={}))
    assert failed["status"] == "failed" and failed["error"] == "ValueError: bad"
