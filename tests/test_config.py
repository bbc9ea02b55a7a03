from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.cli import load_config
from tuneforge.config import ConfigError, load

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "tuneforge" / "examples"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(example: Path) -> None:
    cfg = load_config(example, [])
    assert cfg.name


def test_examples_start_with_their_command() -> None:
    for example in EXAMPLES.glob("*.yaml"):
        assert example.read_text().startswith("# tuneforge "), example


def test_typo_in_section_key_suggests_nearest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "train:\n  lrr: 0.1\n"), [])
    msg = str(e.value)
    assert "unknown key 'train.lrr'" in msg and "did you mean 'lr'" in msg and "allowed:" in msg


def test_typo_in_top_level_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        load_config(write(tmp_path, "trian:\n  lr: 0.1\n"), [])


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.batch_size = 'four'"):
        load_config(write(tmp_path, "train:\n  batch_size: four\n"), [])


def test_missing_dataset_file_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.datasets\.0\.path = '/no/such/file.json'.*does not exist"):
        load_config(write(tmp_path, "data:\n  datasets:\n    - path: /no/such/file.json\n"), [])


def test_method_params_validated_by_the_method_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'method.rank' \(did you mean 'r'\?\)"):
        load_config(write(tmp_path, "method:\n  name: lora\n  rank: 8\n"), [])
    with pytest.raises(ConfigError, match=r"method.name='lroa' is not a known method.*did you mean 'lora'"):
        load_config(write(tmp_path, "method: lroa\n"), [])


def test_overrides_use_the_same_names(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "method: lora\n"), ["train.lr=1e-4", "method.r=4", "data.cutoff_len=64"])
    assert cfg.train.lr == 1e-4 and cfg.method.r == 4 and cfg.data.cutoff_len == 64  # type: ignore[attr-defined]
    assert cfg.name == "run"  # the file's stem
    with pytest.raises(ConfigError, match=r"must look like key\.path=value"):
        load_config(write(tmp_path, ""), ["train.lr"])
    with pytest.raises(ConfigError, match=r"unknown key .train\.nope."):
        load_config(write(tmp_path, ""), ["train.nope=1"])


def test_config_is_frozen_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "method:\n  name: lora\n  r: 4\n"), [])
    with pytest.raises(Exception, match="frozen"):
        cfg.train.lr = 1.0  # type: ignore[misc]
    again = load_config(write(tmp_path, cfg.to_yaml()), [])
    assert again == cfg


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(write(tmp_path, "train: [\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(write(tmp_path, "- a\n- b\n"))
