"""tuneforge's own adapter format, for methods PEFT does not provide (bottleneck adapters, BitFit).

A folder holding:
- `tuneforge_adapter.json`: {"format": "tuneforge-adapter", "version": 1, "method": {<the method params,
  as in the run config, with `name`>}, "base_model_name_or_path": ..., "tensors": [<names>]}
- `adapter_model.safetensors`: the trained tensors only, under their names in the adapted model
  (e.g. `model.layers.0.series_adapter_mlp.down.weight`, `model.layers.0.mlp.up_proj.bias`).

Loading applies the same method to a fresh base model (which recreates the adapter modules, zero-initialised)
and then loads the tensors; every trained tensor must be in the file and every tensor in the file must exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.config import MethodSection
from tuneforge.methods.common import MethodError

CONFIG_FILE = "tuneforge_adapter.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "tuneforge-adapter"
VERSION = 1
# Attribute set on a model adapted by a native method: the params it was adapted with.
NATIVE_ATTR = "tuneforge_native_method"


def mark_native(model: Any, params: MethodSection) -> None:
    setattr(model, NATIVE_ATTR, params)


def native_params(model: Any) -> MethodSection | None:
    return getattr(model, NATIVE_ATTR, None)


def is_native_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()


def trained_tensors(model: Any) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_native(model: Any, out_dir: Path) -> None:
    from safetensors.torch import save_file

    params = native_params(model)
    if params is None:
        raise MethodError("this model carries no tuneforge adapter (apply the method first)")
    tensors = {name: p.detach().contiguous() for name, p in trained_tensors(model).items()}
    out_dir = Path(out_dir)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    spec = {
        "format": FORMAT,
        "version": VERSION,
        "method": params.model_dump(mode="json"),
        "base_model_name_or_path": getattr(model, "name_or_path", None),
        "tensors": sorted(tensors),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def read_native_spec(folder: Path) -> dict[str, Any]:
    """The method params (a mapping with `name`) of a saved native adapter."""
    path = Path(folder) / CONFIG_FILE
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MethodError(f"{path}: not a readable tuneforge adapter config: {e}") from e
    if spec.get("format") != FORMAT or spec.get("version") != VERSION:
        raise MethodError(
            f"{path}: format {spec.get('format')!r} version {spec.get('version')!r}; "
            f"this tuneforge reads {FORMAT!r} version {VERSION}"
        )
    method = spec.get("method")
    if not isinstance(method, dict) or "name" not in method:
        raise MethodError(f"{path}: `method` must be a mapping with a `name`")
    return method


def load_native_weights(model: Any, folder: Path) -> Any:
    """Load the saved tensors into `model`, already adapted by the same method; refuse any mismatch."""
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / WEIGHTS_FILE))
    expected = set(trained_tensors(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise MethodError(
            f"{folder}: the saved tensors do not fit this model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); was it trained on a different base model?"
        )
    model.load_state_dict(state, strict=False)
    return model
