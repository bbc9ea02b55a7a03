"""Gradio widgets for the form fields, and the values behind them (the UI's only toolkit-specific form code)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tuneforge.config import RunConfig
from tuneforge.runs import RunDir
from tuneforge.webui.form import FIELDS, FieldSpec, defaults, display, field_info, method_choices

BASE_MODEL = "(base model: model.path)"


def make_widget(spec: FieldSpec, value: Any, method: str, visible: bool = True) -> Any:
    """The widget of one config key: its elem_id and its label are the key path."""
    common: dict[str, Any] = {"label": spec.key, "elem_id": spec.key, "visible": visible}
    if spec.info:
        common["info"] = spec.info
    if spec.kind == "check":
        return gr.Checkbox(value=bool(value), **common)
    if spec.kind == "number":
        return gr.Number(value=value, precision=0 if spec.integer else None, **common)
    if spec.kind == "choice":
        choices = [display(c, "choice") for c in (method_choices(spec, method) or spec.choices)]
        if value not in choices and value != "":
            choices.append(value)
        custom = spec.section == "method" and spec.key != "method.name"
        return gr.Dropdown(choices=choices, value=value, allow_custom_value=custom, **common)
    return gr.Textbox(value=value, lines=1, **common)


def initial_values(cfg: RunConfig) -> dict[str, Any]:
    """Widget values showing an existing config (defaults where the config has no such key)."""
    method = cfg.method.name
    values = defaults(method)
    dumped = cfg.model_dump(mode="json")
    for spec in FIELDS:
        node: Any = dumped
        for part in spec.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None or field_info(spec, method) is not None:
            values[spec.key] = display(node, spec.kind)
    return values


def dataset_values(cfg: RunConfig) -> list[str]:
    return [str(d.name or d.path) for d in cfg.data.datasets]


def method_updates(method: str) -> list[Any]:
    """Show the chosen method's parameters with its own defaults; hide the others."""
    values = defaults(method)
    updates = []
    for spec in FIELDS:
        if spec.section != "method" or spec.key == "method.name":
            continue
        has = method in spec.methods
        update: dict[str, Any] = {"visible": has}
        if has:
            update["value"] = values[spec.key]
            if spec.kind == "choice":
                update["choices"] = [display(c, "choice") for c in method_choices(spec, method)] or [values[spec.key]]
        updates.append(gr.update(**update))
    return updates


def list_runs(runs_dir: str) -> list[str]:
    """Finished runs (with adapter/ or model/) under the runs folder, newest first."""
    root = Path(runs_dir or "runs")
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if RunDir(p).is_run() and RunDir(p).trained_output() is not None]
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def loss_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """metrics.jsonl records as the loss plot's long table (step, loss, split)."""
    rows = []
    for r in records:
        for key, split in (("loss", "train"), ("eval_loss", "eval")):
            if isinstance(r.get(key), (int, float)) and "step" in r:
                rows.append({"step": int(r["step"]), "loss": float(r[key]), "split": split})
    return pd.DataFrame(rows, columns=["step", "loss", "split"])


__all__ = [
    "BASE_MODEL",
    "dataset_values",
    "initial_values",
    "list_runs",
    "loss_frame",
    "make_widget",
    "method_updates",
]
