"""The stage table is the one source of what a stage is; the method entries say which stages they refuse."""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel

from tuneforge.config import ConfigError, RunConfig, StageRefusal, load
from tuneforge.methods import METHOD_PARAMS, METHODS, LoraParams, Method
from tuneforge.stages import STAGES, StageSpec, run_stage, stage_sections
from tuneforge.webui import form

STAGES_DIR = Path(__file__).resolve().parents[1] / "src" / "tuneforge" / "stages"
SHARED_SECTIONS = {
    "model",
    "data",
    "method",
    "train",
    "output",
    "eval",
    "rag",
    "lab",
    "bench",
    "prepare",
    "sweep",
    "compare",
    "distributed",
}


def test_every_row_has_its_file_and_a_runner() -> None:
    assert list(STAGES) == ["pt", "sft", "rm", "dpo", "kto", "grpo"]
    for name, row in STAGES.items():
        assert row.name == name and row.summary
        assert (STAGES_DIR / f"{name}.py").is_file()
        params = inspect.signature(row.run).parameters
        assert list(params)[:2] == ["cfg", "callbacks"], f"{name}.run must be run(cfg, callbacks=())"


def test_rows_are_built_by_keyword_and_frozen() -> None:
    with pytest.raises(TypeError):
        StageSpec("x", "summary")  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        STAGES["sft"].scores_pairs = True  # type: ignore[misc]


def test_table_sections_are_runconfig_sections() -> None:
    owned = stage_sections()
    assert owned == {
        "vocab": ("pt",),
        "privacy": ("pt", "sft"),
        "rm": ("rm",),
        "dpo": ("dpo",),
        "kto": ("kto",),
        "grpo": ("grpo",),
    }
    for section in owned:
        annotation = RunConfig.model_fields[section].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), section
    sections = {n for n, f in RunConfig.model_fields.items() if n not in ("name", "stage")}
    unknown = sections - SHARED_SECTIONS - set(owned)
    assert not unknown, f"RunConfig sections neither shared nor in the stage table: {unknown}"


def test_preference_stages_are_the_rows_that_score_pairs() -> None:
    assert [n for n, row in STAGES.items() if row.scores_pairs] == ["rm", "dpo", "kto"]


def test_webui_stage_sections_and_choices_come_from_the_table() -> None:
    assert stage_sections() == form.STAGE_SECTIONS
    assert next(f for f in form.FIELDS if f.key == "stage").choices == tuple(STAGES)
    assert set(stage_sections()) <= set(form.SECTIONS)
    assert form.section_title("vocab") == "vocab (stage pt)" and form.section_title("data") == "data"


def test_unknown_stage_names_the_table() -> None:
    with pytest.raises(ConfigError, match=r"stage='dpp' is not a known stage; allowed: pt, sft, rm, dpo, kto.*'dpo'"):
        load({"stage": "dpp"}, methods=METHOD_PARAMS, stages=STAGES)


def test_without_the_table_a_config_still_builds() -> None:
    assert RunConfig().stage == "sft"
    assert load({"stage": "dpo", "kto": {"beta": 0.2}}).kto.beta == 0.2  # no table: no stage checks
    with pytest.raises(ConfigError, match="section `kto` applies to stage 'kto'"):
        load({"stage": "dpo", "kto": {"beta": 0.2}}, stages=STAGES)


def test_a_new_row_is_all_the_config_needs() -> None:
    """A row's sections and scores_pairs are read from the table handed to load(), nothing else."""
    table = {**STAGES, "orpo": StageSpec(name="orpo", summary="x", sections=("dpo",), scores_pairs=True)}
    table["dpo"] = replace(STAGES["dpo"], sections=())
    cfg = load({"stage": "orpo", "dpo": {"beta": 0.3}}, stages=table)
    assert cfg.dpo.beta == 0.3
    with pytest.raises(ConfigError, match="section `dpo` applies to stage 'orpo', but stage is 'sft'"):
        load({"dpo": {"beta": 0.3}}, stages=table)
    shared = {**STAGES, "dpo2": StageSpec(name="dpo2", summary="x", sections=("dpo",))}
    with pytest.raises(ConfigError, match="section `dpo` applies to stage 'dpo' or 'dpo2', but stage is 'kto'"):
        load({"stage": "kto", "dpo": {"beta": 0.3}}, stages=shared)


def test_method_entries_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Method("lora", LoraParams, lambda m, p: m, "adapter", True, "s")  # type: ignore[misc]
    for name, method in METHODS.items():
        assert method.name == name


def test_refusals_are_read_from_the_method_entry() -> None:
    assert set(METHODS["mpt"].refused_stages) == {"rm", "dpo", "kto", "grpo"}
    assert set(METHODS["adalora"].refused_stages) == {"dpo", "kto", "grpo"}
    assert set(METHODS["qlora"].refused_stages) == {"rm"}
    assert {n for n, m in METHODS.items() if m.refused_stages} == {"mpt", "adalora", "qlora"}
    why = METHODS["qlora"].refused_stages["rm"].why
    with pytest.raises(ConfigError) as e:
        load({"stage": "rm", "method": "qlora"}, methods=METHOD_PARAMS)
    assert f"method 'qlora' cannot train stage 'rm': {why}" in str(e.value)


class PickyParams(LoraParams):
    refused_stages: ClassVar[dict[str, StageRefusal]] = {
        "kto": StageRefusal(why="picky cannot kto"),
        "dpo": StageRefusal(why="picky needs no reference", lifted_without_reference=True),
    }
    name: Literal["picky"] = "picky"  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        ({"stage": "kto"}, "picky cannot kto"),
        ({"stage": "dpo"}, "picky needs no reference"),
        ({"stage": "dpo", "dpo": {"loss": "simpo"}}, None),  # keeps no reference adapter: lifted
        ({"stage": "sft"}, None),
    ],
)
def test_a_new_methods_refusal_needs_only_its_params(raw: dict[str, Any], refused: str | None) -> None:
    methods = {**METHOD_PARAMS, "picky": PickyParams}
    spec = {**raw, "method": "picky"}
    if refused is None:
        assert load(spec, methods=methods, stages=STAGES).method.name == "picky"
        return
    with pytest.raises(ConfigError, match=f"method 'picky' cannot train stage '{raw['stage']}': {refused}"):
        load(spec, methods=methods, stages=STAGES)


def test_the_table_imports_no_stage_module() -> None:
    """`tuneforge validate` and the web UI's form read the table; a stage's trainer stack loads when it runs."""
    code = "import sys, tuneforge.stages; print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert callable(run_stage)
