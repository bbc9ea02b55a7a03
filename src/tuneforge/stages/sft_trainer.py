"""The SFT stage's trainer: transformers' Trainer with the label-only, chunked loss (train.label_only_logits).

The loss path and its start-up check are described in docs/speed.md (`tuneforge bench speed` measures it).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from tuneforge.models.loss import label_only_loss, label_only_parts

log = logging.getLogger("tuneforge.train")

# The start-up check of the label-only loss: this many tokens of the first row, and the relative tolerance
# (shared by sft.py's packing check).
CHECK_TOKENS = 96
CHECK_RTOL = 1e-4


class SFTTrainer(Trainer):
    """transformers' Trainer (not TRL's SFTTrainer) with the label-only, chunked loss.

    The loss path is checked once, on a slice of the first training batch, against the model's own loss;
    a model where it deviates (or cannot apply) trains on the plain path, with a warning saying why.
    """

    def __init__(self, *args: Any, label_only_logits: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label_only: tuple[Any, Any] | None = None
        self._checked = not label_only_logits

    def _check_label_only(self, model: Any, inputs: dict[str, Any]) -> None:
        self._checked = True
        if self.accelerator.num_processes > 1:
            # The chunked path runs the model's parts outside the DDP / FSDP / DeepSpeed wrapper, which would skip
            # the wrapper's gradient all-reduce (each rank would step on its own gradient).
            # The plain loss is the right one here, not a fault the user could fix: an info line, once (rank 0).
            if self.accelerator.is_main_process:
                n = self.accelerator.num_processes
                log.info("label-only chunked loss: off (%d processes: the plain loss, all-reduced by the wrapper)", n)
            return
        parts = label_only_parts(self.accelerator.unwrap_model(model))
        if isinstance(parts, str):
            log.warning("train.label_only_logits: not applied (%s)", parts)
            return
        sample = {k: v[:1, :CHECK_TOKENS] for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() == 2}
        if "labels" not in sample or not bool((sample["labels"][:, 1:] != -100).any()):
            sample = {k: v[:1] for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() == 2}
        was_training = model.training
        model.eval()  # no dropout: both paths see the same function
        try:
            with torch.no_grad(), self.compute_loss_context_manager():
                plain = float(model(**sample, use_cache=False).loss)
                fast = float(label_only_loss(*parts, sample))
        finally:
            model.train(was_training)
        if not math.isclose(plain, fast, rel_tol=CHECK_RTOL) or not math.isfinite(fast):
            log.warning("train.label_only_logits: not applied (loss %.6f differs from the plain %.6f)", fast, plain)
            return
        self.label_only = parts
        log.info("label-only chunked loss: on (first-batch check %.6f vs plain %.6f)", fast, plain)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if return_outputs or not model.training or "labels" not in inputs:  # evaluation keeps the plain path
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self._checked:
            self._check_label_only(model, inputs)
        if self.label_only is None:
            self.loss_is_scaled_for_ga = None  # the Trainer's own rule for the model's loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Divided by num_items_in_batch (the accumulated batch's label count) it is already scaled for accumulation.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        return label_only_loss(*self.label_only, inputs, num_items_in_batch)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """The Trainer's sampler, with length groups the size of the global batch (the Trainer's are per process):
        the samples of each step are then the same for any process count (docs/scale.md)."""
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler) and self.args.world_size > 1:
            per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            return LengthGroupedSampler(per_step, lengths=sampler.lengths, generator=sampler.generator)
        return sampler


__all__ = ["CHECK_RTOL", "CHECK_TOKENS", "SFTTrainer"]
