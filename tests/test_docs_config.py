"""docs/config.md is generated from the config models and the stage table, so the documented names are the real ones.

Regenerate with: TUNEFORGE_WRITE_DOCS=1 pytest tests/test_docs_config.py
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path

from pydantic import BaseModel

from tuneforge.config import ArmSpec, DatasetSpec, RunConfig
from tuneforge.stages.table import STAGES, stage_sections

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _type_name(annotation: object) -> str:
    text = re.sub(r"tuneforge\.config\.\w+\.", "", str(annotation).replace("typing.", ""))
    if isinstance(annotation, type):
        text = annotation.__name__
    return text.replace("NoneType", "None").replace("|", "\\|")


def _section_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


# sections holding a list of entries, and the model of one entry
ENTRIES: dict[str, tuple[str, type[BaseModel]]] = {
    "data": ("data.datasets", DatasetSpec),
    "compare": ("compare.arms", ArmSpec),
}


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `tuneforge.config` (do not edit by hand). Every key is also a command-line override",
        "path: `tuneforge train CONFIG.yaml section.key=value`. Method parameters depend on `method.name`: see",
        "[methods.md](methods.md).",
        "",
    ]
    top = [(n, f) for n, f in RunConfig.model_fields.items() if _section_model(f.annotation) is None]
    lines += ["## top level", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for n, f in top:
        kind = " \\| ".join(repr(s) for s in STAGES) if n == "stage" else _type_name(f.annotation)
        lines.append(f"| `{n}` | {kind} | `{f.default!r}` | {f.description or ''} |")
    lines += ["", "## stages", "", "The stage table (`tuneforge.stages.table.STAGES`): a stage's own sections are"]
    lines += ["refused with any other stage; only the stages that score pairs take `data.test_datasets`.", ""]
    lines += ["| stage | own sections | scores pairs | what it trains |", "|---|---|---|---|"]
    for row in STAGES.values():
        own = ", ".join(f"`{s}:`" for s in row.sections) or "—"
        lines.append(f"| `{row.name}` | {own} | {'yes' if row.scores_pairs else 'no'} | {row.summary} |")
    owners = stage_sections()
    for name, field in RunConfig.model_fields.items():
        model = _section_model(field.annotation)
        if model is None or name == "method":
            continue
        title = f"## `{name}:`" + (f" (stage {', '.join(owners[name])})" if name in owners else "")
        lines += ["", title, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, f in model.model_fields.items():
            default = "(required)" if f.is_required() else repr(f.get_default(call_default_factory=True))
            lines.append(f"| `{name}.{key}` | {_type_name(f.annotation)} | `{default}` | {f.description or ''} |")
        entry = ENTRIES.get(name)
        if entry is not None:
            key_path, spec = entry
            lines += [
                "",
                f"Each entry of `{key_path}`:",
                "",
                "| key | type | default | meaning |",
                "|---|---|---|---|",
            ]
            for key, f in spec.model_fields.items():
                default = "(required)" if f.is_required() else repr(f.get_default(call_default_factory=True))
                lines.append(f"| `{key}` | {_type_name(f.annotation)} | `{default}` | {f.description or ''} |")
    return "\n".join(lines) + "\n"


def test_config_reference_is_current() -> None:
    text = render()
    if os.environ.get("TUNEFORGE_WRITE_DOCS") == "1":
        DOC.write_text(text, encoding="utf-8")
    assert DOC.read_text(encoding="utf-8") == text, (
        "regenerate: TUNEFORGE_WRITE_DOCS=1 pytest tests/test_docs_config.py"
    )
