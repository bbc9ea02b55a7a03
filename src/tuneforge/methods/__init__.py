"""Fine-tuning methods: the METHODS table (`table.py`) maps a name to its params model, its apply function,
its output and the hooks a training stage calls; `outputs.py` saves, reloads and merges what a method trained.

Adding a method is one keyword-built entry in METHODS plus its params model (a `MethodSection` subclass whose
`name` is a Literal of the method's name, with `refused_stages` if some stage cannot work) and an
`apply(model, params) -> model` that marks what trains. Everything else (config validation, saving, reloading
for chat, merging) follows from the entry. docs/methods.md lists them.
"""

from __future__ import annotations

from tuneforge.methods.common import MethodError
from tuneforge.methods.full import FreezeParams, FullParams
from tuneforge.methods.lora import LoraParams
from tuneforge.methods.outputs import (
    METHOD_FILE,
    adapter_base_name,
    count_parameters,
    describe,
    is_adapter_folder,
    load_trained,
    merge,
    save_trained,
    saved_params,
)
from tuneforge.methods.table import (
    METHOD_PARAMS,
    METHODS,
    Method,
    apply_method,
    build_optimizer,
    method_callbacks,
    method_of,
    model_load_kwargs,
    prepare_base,
)

__all__ = [
    "METHODS",
    "METHOD_FILE",
    "METHOD_PARAMS",
    "FreezeParams",
    "FullParams",
    "LoraParams",
    "Method",
    "MethodError",
    "adapter_base_name",
    "apply_method",
    "build_optimizer",
    "count_parameters",
    "describe",
    "is_adapter_folder",
    "load_trained",
    "merge",
    "method_callbacks",
    "method_of",
    "model_load_kwargs",
    "prepare_base",
    "save_trained",
    "saved_params",
]
