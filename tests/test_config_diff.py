"""config_diff: what resume and a rerun comparison check, and the settings an older tuneforge did not write."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuneforge.config import RunConfig
from tuneforge.config.diff import config_diff
from tuneforge.runs import RunExistsError, check_run_available


def test_differences_are_named_by_dotted_path_and_list_item() -> None:
    assert config_diff({"train": {"lr": 1e-3}}, {"train": {"lr": 2e-3}}) == ["train.lr"]
    saved = {"data": {"datasets": [{"name": "a", "ratio": 1.0}]}}
    assert config_diff(saved, {"data": {"datasets": [{"name": "a", "ratio": 2.0}]}}) == ["data.datasets[0].ratio"]
    assert config_diff(saved, {"data": {"datasets": []}}) == ["data.datasets"]  # another length: the whole list
    assert config_diff({"a": 1}, {}) == ["a"]  # a setting dropped is a difference


def test_a_setting_newer_than_the_saved_dump_counts_only_when_it_is_not_its_default() -> None:
    # prepare.holdout (default 0.1) and eval.contrasts (default []) came after some saved dumps were written
    assert config_diff({"prepare": {}}, {"prepare": {"holdout": 0.1}}) == []
    assert config_diff({"prepare": {}}, {"prepare": {"holdout": 0.2}}) == ["prepare.holdout"]
    assert config_diff({"eval": {}}, {"eval": {"contrasts": []}}) == []
    assert config_diff({"eval": {}}, {"eval": {"contrasts": [["a", "b"]]}}) == ["eval.contrasts"]
    entry = {"name": "iso_dates", "ratio": None}  # a dataset entry without the newer labels / instruction keys
    assert config_diff({"d": [entry]}, {"d": [{**entry, "labels": [], "instruction": None}]}) == []
    assert config_diff({"d": [entry]}, {"d": [{**entry, "labels": ["no", "yes"]}]}) == ["d[0].labels"]


def test_resume_accepts_a_config_saved_before_a_setting_existed_and_another_thread_count(tmp_path: Path) -> None:
    cfg = RunConfig.model_validate({"name": "r", "output": {"dir": str(tmp_path)}, "train": {"save_steps": 1}})
    run = tmp_path / "r"
    (run / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    dump = cfg.model_dump(mode="json")
    del dump["eval"]["contrasts"], dump["prepare"]["holdout"]  # as an older tuneforge wrote config.yaml
    (run / "config.yaml").write_text(yaml.safe_dump(dump), encoding="utf-8")
    resume = {"train": {**cfg.train.model_dump(), "resume": True, "threads": 2}}
    assert check_run_available(cfg.model_copy(update={"train": cfg.train.model_copy(update=resume["train"])}))
    changed = cfg.train.model_copy(update={"resume": True, "lr": 0.5})
    with pytest.raises(RunExistsError, match=r"differs from the saved one at train\.lr"):
        check_run_available(cfg.model_copy(update={"train": changed}))
