"""LoRA through PEFT, with its variants: DoRA, rsLoRA and the PiSSA / OLoRA / Gaussian / orthogonal inits.

PiSSA and OLoRA move the principal part of each target weight into the adapter: the base becomes
W_res = W - s·B0·A0. An adapter trained on W_res reproduces the trained model only on W_res, not on the
original base that `PeftModel.from_pretrained` is given later. PEFT's answer is used here
(`save_pretrained(..., path_initial_model_for_weight_conversion=...)`): right after initialisation the
initial adapter (A0, B0) is saved to a temporary folder, and at save time PEFT rewrites the trained adapter
as ΔW = s·(B·A - B0·A0), a plain LoRA of rank 2r (alpha doubled, or ×√2 with rsLoRA, so the scale is
unchanged) that loads on the untouched base. Trainer checkpoints are still saved plainly, relative to W_res,
which is what resuming on the same (deterministically initialised) model needs.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import Field, model_validator

from tuneforge.config import MethodSection
from tuneforge.methods.common import (
    MethodError,
    TargetedParams,
    check_saved_modules,
    check_targets,
    coerce,
    match_task,
)

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel

INIT_PATTERN = r"^(default|gaussian|pissa|pissa_niter_[0-9]+|olora|orthogonal)$"
# Inits that rewrite the base weights; their adapters are converted on save (see the module docstring).
BASE_MUTATING_INITS = ("pissa", "olora")
# Attribute of a PeftModel holding the folder of its initial adapter when the init mutated the base.
INITIAL_ADAPTER_ATTR = "tuneforge_initial_adapter"


class LoraBase(TargetedParams):
    """The settings of every LoRA-family entry; each entry is a subclass that fixes its `name`."""

    r: int = Field(8, gt=0, description="Rank of the low-rank update.")
    alpha: int = Field(16, gt=0, description="Update scale: alpha/r (alpha/sqrt(r) with use_rslora).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout applied to the adapter's input.")
    use_dora: bool = Field(False, description="DoRA: learn a magnitude per output feature and a direction.")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha/sqrt(r), steadier at high ranks.")
    init: str = Field(
        "default",
        pattern=INIT_PATTERN,
        description="Adapter init: default (B=0) | gaussian | pissa | pissa_niter_<k> (fast SVD, "
        "k iterations) | olora | orthogonal (r even).",
    )
    modules_to_save: list[str] = Field(
        default_factory=list, description="Modules trained whole and saved with the adapter, e.g. [lm_head]."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")

    @model_validator(mode="after")
    def _combinations(self) -> Self:
        if self.init == "orthogonal" and self.r % 2:
            raise ValueError(f"init=orthogonal needs an even r, got r={self.r}")
        if mutates_base(self.init):
            # PEFT's conversion to a base-compatible adapter handles only the plain A/B matrices.
            if self.use_dora:
                raise ValueError(f"init={self.init} cannot be combined with use_dora")
            if self.modules_to_save or self.bias != "none":
                raise ValueError(f"init={self.init} cannot be combined with modules_to_save or bias != none")
        return self


class LoraParams(LoraBase):
    name: Literal["lora"] = "lora"


def mutates_base(init: str) -> bool:
    return init.startswith(BASE_MUTATING_INITS)


def build_lora_config(p: LoraBase) -> LoraConfig:
    """The one place a peft LoraConfig is made from tuneforge's params."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=p.r,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        target_modules=p.target_modules,
        use_dora=p.use_dora,
        use_rslora=p.use_rslora,
        init_lora_weights=True if p.init == "default" else p.init,  # type: ignore[arg-type]
        modules_to_save=list(p.modules_to_save) or None,
        bias=p.bias,
    )


def apply_lora(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    """Wrap `model` (modified in place) in a PeftModel whose adapters are the only trainable weights."""
    import torch
    from peft import get_peft_model

    p = params if isinstance(params, LoraBase) else coerce(params, LoraParams)
    check_targets(model, p.target_modules)
    check_saved_modules(model, p.modules_to_save)
    config = match_task(model, build_lora_config(p))
    if not mutates_base(p.init):
        return get_peft_model(model, config)  # type: ignore[return-value]
    # A fixed seed makes the (randomised) fast-SVD decomposition repeatable, so resuming from a checkpoint,
    # which re-initialises and then loads the trained A/B, sees the same W_res the checkpoint was trained on.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        peft_model = get_peft_model(model, config)
    _snapshot_initial_adapter(peft_model)
    return peft_model  # type: ignore[return-value]


def _snapshot_initial_adapter(peft_model: Any) -> None:
    # Saved with init_lora_weights=True (and the live config set likewise, as PEFT's PiSSA recipe does), so
    # that loading an adapter never decomposes the base a second time.
    peft_model.peft_config["default"].init_lora_weights = True
    root = Path(tempfile.mkdtemp(prefix="tuneforge-lora-init-"))
    folder = root / "initial"
    peft_model.save_pretrained(str(folder))
    weakref.finalize(peft_model, shutil.rmtree, root, True)  # removed with the model, or at exit
    setattr(peft_model, INITIAL_ADAPTER_ATTR, folder)


def save_adapter(model: Any, out_dir: Path) -> None:
    """Save a PEFT adapter folder (safetensors) that `PeftModel.from_pretrained(base, out_dir)` loads."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise MethodError(f"expected a PEFT model to save as an adapter, got {type(model).__name__}")
    initial = getattr(model, INITIAL_ADAPTER_ATTR, None)
    if initial is None:
        model.save_pretrained(str(out_dir))
    else:
        model.save_pretrained(str(out_dir), path_initial_model_for_weight_conversion=str(initial))


# Named entries of the LoRA family. Each is `lora` with one setting fixed, so `method: dora` and
# `method: {name: lora, use_dora: true}` build the same adapter; the setting keeps its one name (`use_dora`),
# it shows in the resolved config, and any other value for it is refused. They exist so that a method
# comparison can list them side by side by name.
class DoraParams(LoraBase):
    name: Literal["dora"] = "dora"
    use_dora: Literal[True] = Field(True, description="Fixed: this entry is lora with use_dora=true.")


class RsLoraParams(LoraBase):
    name: Literal["rslora"] = "rslora"
    use_rslora: Literal[True] = Field(True, description="Fixed: this entry is lora with use_rslora=true.")


class PissaParams(LoraBase):
    name: Literal["pissa"] = "pissa"
    init: str = Field(
        "pissa",
        pattern=r"^pissa(_niter_[0-9]+)?$",
        description="pissa (exact SVD) | pissa_niter_<k> (fast SVD, k iterations); lora with this init.",
    )


class OloraParams(LoraBase):
    name: Literal["olora"] = "olora"
    init: Literal["olora"] = Field("olora", description="Fixed: this entry is lora with init=olora.")


class LoraPlusParams(LoraBase):
    name: Literal["lora_plus"] = "lora_plus"
    lr_ratio: float = Field(
        16.0, ge=1, description="LoRA+: the B matrices learn at train.lr × lr_ratio (A at train.lr)."
    )
    lr_embedding: float = Field(1e-6, gt=0, description="Learning rate of LoRA adapters on embedding layers.")


def loraplus_optimizer(model: Any, params: MethodSection, args: Any) -> Any:
    """The trainer's optimiser class and settings (train.optim), with B matrices at lr × lr_ratio (peft's
    create_loraplus_optimizer)."""
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    p = coerce(params, LoraPlusParams)
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    return create_loraplus_optimizer(
        model,
        optimizer_cls,
        lr=args.learning_rate,
        loraplus_lr_ratio=p.lr_ratio,
        loraplus_lr_embedding=p.lr_embedding,
        loraplus_weight_decay=args.weight_decay,
        **kwargs,
    )
