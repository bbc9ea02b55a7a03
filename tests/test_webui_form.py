"""The web UI's form (no browser): one widget per config key, the YAML it writes, the errors it shows, the jobs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from tuneforge.config import ConfigError, RunConfig, load
from tuneforge.methods import METHOD_PARAMS
from tuneforge.webui import initial_config, parse_auth
from tuneforge.webui.form import FIELDS, SECTIONS, build_config, config_yaml, dataset_names, defaults, write_config
from tuneforge.webui.jobs import Job, Jobs


def test_every_config_key_has_one_widget_named_by_its_path() -> None:
    keys = [f.key for f in FIELDS]
    assert len(keys) == len(set(keys))
    expected = {"name", "stage", "method.name"}
    for section, model in SECTIONS.items():
        expected |= {f"{section}.{name}" for name in model.model_fields} - {"data.datasets"}
    for params in METHOD_PARAMS.values():
        expected |= {f"method.{name}" for name in params.model_fields}
    assert set(keys) == expected


def test_a_fresh_form_is_the_default_config() -> None:
    assert build_config(defaults(), []) == load({}, methods=METHOD_PARAMS)
    assert defaults()["train.save_total_limit"] == "2"  # an optional number is shown as plain text
    assert defaults()["data.variables"] == "{}" and defaults()["method.target_modules"] == "all-linear"


@pytest.mark.parametrize("method", sorted(METHOD_PARAMS))
def test_yaml_of_every_method_loads_back_to_the_same_config(method: str, tmp_path: Path) -> None:
    values = defaults(method)
    values.update({"method.name": method, "name": "m", "train.lr": 5e-4, "data.variables": "{name: Ada}"})
    cfg = build_config(values, ["iso_dates"])
    text = config_yaml(cfg)
    assert yaml.safe_load(text)["method"]["name"] == method
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    assert load(tmp_path / "c.yaml", methods=METHOD_PARAMS) == cfg  # exactly what `tuneforge train` reads
    assert "lr: 0.0005" in text and "variables:\n    name: Ada" in text


def test_errors_are_the_clis(tmp_path: Path) -> None:
    values = defaults() | {"train.lr": -1, "method.r": 0}
    with pytest.raises(ConfigError) as form_error:
        build_config(values, [])
    (tmp_path / "c.yaml").write_text("train: {lr: -1}\nmethod: {name: lora, r: 0}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as cli_error:
        load(tmp_path / "c.yaml", methods=METHOD_PARAMS)
    assert "method.r = 0" in str(form_error.value)
    assert str(form_error.value).split("\n")[1:] == str(cli_error.value).split("\n")[1:]
    with pytest.raises(ConfigError, match=r"data.variables = '\{name: '"):
        build_config(defaults() | {"data.variables": "{name: "}, [])


def test_stage_sections_and_method_parameters_follow_the_choice() -> None:
    values = defaults("qlora") | {"method.name": "qlora", "stage": "dpo", "dpo.beta": 0.3, "kto.beta": 0.9}
    cfg = build_config(values, ["iso_dates_pref"])
    assert cfg.dpo.beta == 0.3 and cfg.kto.beta == 0.1  # kto.* applies to stage kto only: not written
    assert cfg.method.name == "qlora" and cfg.method.bits == 4  # type: ignore[attr-defined]
    text = config_yaml(cfg)
    assert "dpo:\n  beta: 0.3" in text and "kto" not in text


def test_datasets_names_and_paths(tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text('{"my_set": {"file_name": "mine.jsonl"}}', encoding="utf-8")
    names = dataset_names(str(tmp_path))
    assert names[0] == "my_set" and "iso_dates" in names and "identity" in names
    cfg = build_config(defaults() | {"data.dataset_dir": str(tmp_path)}, ["my_set", str(data)])
    assert cfg.data.datasets[0].name == "my_set" and cfg.data.datasets[1].path == str(data)


def test_write_config_never_replaces_a_foreign_file(tmp_path: Path) -> None:
    cfg = build_config(defaults() | {"name": "x", "output.dir": str(tmp_path)}, [])
    path = write_config(cfg, config_yaml(cfg))
    assert path == tmp_path / "webui" / "x.yaml"
    assert load(path, methods=METHOD_PARAMS) == cfg
    write_config(cfg, config_yaml(cfg))  # its own file: rewritten
    path.write_text("name: x\n", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not written by the web UI"):
        write_config(cfg, config_yaml(cfg))


def test_initial_config_and_auth(tmp_path: Path) -> None:
    (tmp_path / "webui-1").mkdir()
    cfg = initial_config(None, [f"output.dir={tmp_path}", "train.lr=1e-3"])
    assert cfg.name == "webui-2" and cfg.train.lr == 1e-3
    assert initial_config(None, ["name=mine"]).name == "mine"
    assert parse_auth("127.0.0.1", None) is None
    assert parse_auth("0.0.0.0", "ada:secret") == ("ada", "secret")
    with pytest.raises(ValueError, match="--auth USER:PASSWORD"):
        parse_auth("0.0.0.0", None)
    with pytest.raises(ValueError, match="USER:PASSWORD"):
        parse_auth("127.0.0.1", "nocolon")


def test_jobs_collect_output_and_stop(tmp_path: Path) -> None:
    done = Job([sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"], tmp_path / "a.log")
    assert done.wait(30) == 3
    assert done.text() == "hello" and done.status().startswith("failed (exit 3)")
    assert "hello" in (tmp_path / "a.log").read_text(encoding="utf-8")
    jobs = Jobs()
    slow = jobs.start(
        "train", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], tmp_path / "b.log"
    )
    with pytest.raises(RuntimeError, match="already running"):
        jobs.start("train", [sys.executable, "-c", "pass"], tmp_path / "c.log")
    deadline = time.time() + 30
    while "up" not in slow.text() and time.time() < deadline:
        time.sleep(0.1)
    slow.stop()
    assert not slow.running and slow.status().startswith("stopped")


def test_app_has_a_widget_for_every_key() -> None:
    pytest.importorskip("gradio")
    from tuneforge.webui.app import create_app

    app = create_app(RunConfig())
    props = [c.get("props", {}) for c in app.config["components"]]
    by_id = {p.get("elem_id"): p for p in props if p.get("elem_id")}
    for spec in FIELDS:
        assert by_id[spec.key]["label"] == spec.key
    assert by_id["data.datasets"]["multiselect"] is True


def test_cli_verb_refuses_an_open_host_without_auth(capsys) -> None:
    from tuneforge.cli import main

    assert main(["webui", "--host", "0.0.0.0"]) == 2
    assert "--auth USER:PASSWORD" in capsys.readouterr().err
    assert main(["webui", "--config", "/no/such.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err
