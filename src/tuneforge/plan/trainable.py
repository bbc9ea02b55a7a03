"""What each method of the METHODS table trains and adds, counted from the model's shapes as peft counts it.

Each family function reads the method's own params model (validated by the table's class, so a bad setting is
the same error as in training) and resolves `target_modules` by peft's rules on the skeleton of `shapes.py`:
`all-linear` is every Linear but the output head, a list entry matches a module whose name is it or ends in
`.<entry>`. The tensor shapes follow peft 0.18+'s layers (cited per family); tests/test_plan.py compares every
count with peft's `get_nb_trainable_parameters()` (or, for tuneforge's own methods, the parameters left
trainable by `apply_method`) on the tiny models of tests/tiny.py, for every method of the table.

peft writes by hand none of this for a model it has not loaded: a planner for a 70B model cannot build it, so the
counting is repeated here from the same shapes; where peft has a helper that needs no model (LoKr's
factorisation, the default target modules per architecture) it is called directly.
"""

from __future__ import annotations

from collections.abc import Callable

from tuneforge.config import MethodSection
from tuneforge.plan import PlanError
from tuneforge.plan.adaptation import Adaptation, Bottleneck, LowRank, Target, Tensor, locate
from tuneforge.plan.shapes import ModelShape
from tuneforge.plan.trainable_prompt import (
    count_bitfit,
    count_bottleneck,
    count_ia3,
    count_ln_tuning,
    count_mpt,
    count_p_tuning,
    count_prefix,
    count_prompt_tuning,
)
from tuneforge.plan.trainable_weights import (
    count_adalora,
    count_boft,
    count_fourierft,
    count_freeze,
    count_full,
    count_hra,
    count_loha,
    count_lokr,
    count_lora,
    count_low_rank,
    count_oft,
    count_vera,
)


def adapt(shape: ModelShape, params: MethodSection, device_kind: str = "cpu") -> Adaptation:
    """The adaptation `params` (a method's params, validated by its own model) makes of `shape`."""
    from tuneforge.methods.table import method_of

    method = method_of(params.name)
    builder = BUILDERS.get(params.name)
    if builder is None:  # a table entry without a counting rule here: a gap to fill, not a user error
        raise PlanError(f"method {params.name!r} has no memory rule in tuneforge.plan.trainable.BUILDERS")
    result = builder(shape, params, device_kind)
    result.family = method.family
    locate(shape, result)
    return result


Builder = Callable[[ModelShape, MethodSection, str], Adaptation]

# method name -> its counting rule; every name of METHODS has one (tests/test_plan.py checks both ways)
BUILDERS: dict[str, Builder] = {
    "full": count_full,
    "freeze": count_freeze,
    "galore": count_low_rank,
    "apollo": count_low_rank,
    "lora": count_lora,
    "dora": count_lora,
    "rslora": count_lora,
    "pissa": count_lora,
    "olora": count_lora,
    "lora_plus": count_lora,
    "qlora": count_lora,
    "adalora": count_adalora,
    "loha": count_loha,
    "lokr": count_lokr,
    "vera": count_vera,
    "prompt_tuning": count_prompt_tuning,
    "p_tuning": count_p_tuning,
    "prefix_tuning": count_prefix,
    "p_tuning_v2": count_prefix,
    "mpt": count_mpt,
    "ia3": count_ia3,
    "ln_tuning": count_ln_tuning,
    "bitfit": count_bitfit,
    "series_adapter": count_bottleneck,
    "parallel_adapter": count_bottleneck,
    "oft": count_oft,
    "boft": count_boft,
    "hra": count_hra,
    "fourierft": count_fourierft,
}


__all__ = ["BUILDERS", "Adaptation", "Bottleneck", "Builder", "LowRank", "Target", "Tensor", "adapt"]
