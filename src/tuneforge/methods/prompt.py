"""Prompt-learning methods through PEFT: the base model is untouched and learned vectors are put in front.

- prompt_tuning: learned input embeddings ("soft prompt") before the text (Lester et al.).
- p_tuning: the soft prompt is produced by a small MLP or LSTM encoder (Liu et al., P-tuning v1).
- prefix_tuning: learned key/value prefixes in every attention layer, optionally through an MLP
  reparameterisation while training (Li & Liang).
- p_tuning_v2: P-tuning v2 is deep prompt tuning = prefix key/values on every layer without the
  reparameterisation, so it is `prefix_tuning` with `projection: false` fixed (PEFT's PrefixTuning is that
  model). It is a named entry only so that comparisons can list it by its paper's name.
- mpt: multitask prompt tuning (Wang et al.): a shared prompt times a low-rank, per-task matrix. tuneforge's
  data has no task column, so every sample is task `task_id`; the method's own forward pre-hook supplies it
  when a caller passes no `task_ids` (PEFT otherwise refuses: it gives no default task).

None of them is mergeable: there is no weight to fold the prompt into.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from tuneforge.config import MethodSection, StageRefusal
from tuneforge.methods.common import coerce, wrap_peft

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class PromptBase(MethodSection):
    num_virtual_tokens: int = Field(20, gt=0, description="Length of the learned prompt (or prefix).")


class PromptTuningParams(PromptBase):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    init: Literal["random", "sample_vocab", "text"] = Field(
        "sample_vocab",
        description="Start from random vectors, from embeddings of random vocabulary tokens, or from the "
        "embeddings of init_text.",
    )
    init_text: str | None = Field(None, description="Text whose token embeddings start the prompt (init=text).")

    @model_validator(mode="after")
    def _text(self) -> Self:
        if (self.init == "text") != (self.init_text is not None):
            raise ValueError("init=text needs init_text, and init_text is used only with init=text")
        return self


class PTuningParams(PromptBase):
    name: Literal["p_tuning"] = "p_tuning"
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="Network that produces the prompt vectors.")
    encoder_hidden_size: int | None = Field(None, gt=0, description="Its hidden width (default: model width).")
    encoder_num_layers: int = Field(2, gt=0, description="Its depth.")
    encoder_dropout: float = Field(0.0, ge=0, lt=1, description="Its dropout.")


class PrefixBase(PromptBase):
    """Prefix key/values in every layer (PEFT's PrefixTuning)."""


class PrefixTuningParams(PrefixBase):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    encoder_hidden_size: int | None = Field(
        None, gt=0, description="Hidden width of the reparameterisation MLP (default: model width)."
    )
    projection: bool = Field(
        True, description="Train the prefixes through an MLP (Li & Liang); false: train them directly."
    )


class PTuningV2Params(PrefixBase):
    name: Literal["p_tuning_v2"] = "p_tuning_v2"
    projection: Literal[False] = Field(False, description="Fixed: deep prompts trained directly.")


_MPT = StageRefusal(
    why="multitask prompt tuning needs task_ids in every batch, which TRL's preference trainers do not pass; "
    "use prompt_tuning or lora"
)


class MptParams(PromptBase):
    refused_stages: ClassVar[dict[str, StageRefusal]] = {
        "rm": _MPT,
        "dpo": _MPT,
        "kto": _MPT,
        # GRPO's policy passes task_ids through the method's hook; only the frozen reference copy (beta > 0) lacks it
        "grpo": StageRefusal(
            why="with grpo.beta > 0 TRL adds a frozen reference copy of the prompt, which gets no task_ids; "
            "use grpo.beta=0 (no reference), prompt_tuning or lora",
            lifted_without_reference=True,
        ),
    }
    name: Literal["mpt"] = "mpt"
    num_tasks: int = Field(1, gt=0, description="Number of tasks with their own prompt factors.")
    num_ranks: int = Field(1, gt=0, description="Rank of each task's multiplicative prompt matrix.")
    task_id: int = Field(0, ge=0, description="Task of every training and generation sample.")

    @model_validator(mode="after")
    def _task(self) -> Self:
        if self.task_id >= self.num_tasks:
            raise ValueError(f"task_id={self.task_id} must be below num_tasks={self.num_tasks}")
        return self


def apply_prompt_tuning(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    p = coerce(params, PromptTuningParams)
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=p.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit(p.init.upper()),
        prompt_tuning_init_text=p.init_text,
        # Only init=text reads it; the model's own local folder, so nothing is downloaded.
        tokenizer_name_or_path=model.name_or_path if p.init == "text" else None,
    )
    return wrap_peft(model, config, p.name)


def apply_p_tuning(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, TaskType

    p = coerce(params, PTuningParams)
    config = PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=p.num_virtual_tokens,
        encoder_reparameterization_type=PromptEncoderReparameterizationType(p.encoder.upper()),
        encoder_hidden_size=p.encoder_hidden_size,  # type: ignore[arg-type]
        encoder_num_layers=p.encoder_num_layers,
        encoder_dropout=p.encoder_dropout,
    )
    return wrap_peft(model, config, p.name)


def apply_prefix_tuning(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import PrefixTuningConfig, TaskType

    p = params if isinstance(params, PrefixBase) else coerce(params, PrefixTuningParams)
    projection = bool(getattr(p, "projection", True))
    config = PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=p.num_virtual_tokens,
        prefix_projection=projection,
        encoder_hidden_size=getattr(p, "encoder_hidden_size", None) or model.config.hidden_size,
    )
    return wrap_peft(model, config, p.name)


def apply_mpt(model: PreTrainedModel, params: MethodSection) -> PreTrainedModel:
    from peft import MultitaskPromptTuningConfig, MultitaskPromptTuningInit, TaskType

    p = coerce(params, MptParams)
    config = MultitaskPromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=p.num_virtual_tokens,
        num_tasks=p.num_tasks,
        num_ranks=p.num_ranks,
        prompt_tuning_init=MultitaskPromptTuningInit.RANDOM,
    )
    peft_model = wrap_peft(model, config, p.name)
    add_default_task(peft_model, p.task_id)
    return peft_model


def add_default_task(peft_model: Any, task_id: int) -> None:
    """Make the MPT prompt encoder use `task_id` when no task_ids reach it (training through Trainer, chat)."""
    import torch

    encoder = peft_model.prompt_encoder[peft_model.active_adapter]

    def default_task(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        indices, task_ids = args
        if task_ids is not None:
            return None
        return indices, torch.full((indices.shape[0],), task_id, dtype=torch.long, device=indices.device)

    encoder.register_forward_pre_hook(default_task)
