"""The speed levers of the training stages (docs/speed.md): collator, loss path, CPU matmul route.

Each lever has one switch in the config (data.packing + data.packing_row_tokens, train.label_only_logits,
train.onednn_fp32, train.bf16_autocast, train.group_by_length, train.gradient_checkpointing, train.threads)
and the measured contribution of each is in docs/speed.md (`tuneforge bench speed`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, Trainer

from tuneforge.config import RunConfig
from tuneforge.data.collate import PackedRowsCollator
from tuneforge.methods import METHODS
from tuneforge.models.loss import label_only_loss, label_only_parts
from tuneforge.utils.cpu import native_bf16, use_onednn_fp32

log = logging.getLogger("tuneforge.train")

# The start-up check of the label-only loss: this many tokens of the first row, and the relative tolerance.
CHECK_TOKENS = 96
CHECK_RTOL = 1e-4
# The start-up check of data.packing: this many training samples in one row vs padded.
PACK_CHECK_SAMPLES = 4


def sft_collator(cfg: RunConfig, tokenizer: Any) -> PackedRowsCollator | DataCollatorForSeq2Seq:
    if cfg.data.packing:
        return PackedRowsCollator(cfg.data.packing_row_tokens or cfg.data.cutoff_len, pad_id(tokenizer))
    return padded_collator(tokenizer)


def padded_collator(tokenizer: Any) -> DataCollatorForSeq2Seq:
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def packing_refusal(cfg: RunConfig, model: Any, tokenizer: Any, samples: Any) -> str | None:
    """Why this run must not pack its batches (None: packing keeps the loss), decided once before training.

    Prompt-learning methods by their family in the method table: their virtual tokens sit in front of the row,
    so packed samples, whose positions restart, would not see them (the loss check cannot tell at
    initialisation, when the virtual tokens barely matter). Every other model and method by packing_mismatch.
    """
    if METHODS[cfg.method.name].family == "prompt":
        return (
            f"{cfg.method.name} is prompt learning: packed samples restart their positions and would not see the "
            "virtual tokens in front of the row"
        )
    return packing_mismatch(model, tokenizer, samples)


def pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


def packing_mismatch(model: Any, tokenizer: Any, samples: Any) -> str | None:
    """Why padding-free rows would change this model's loss (None: they do not), checked once before training.

    Up to PACK_CHECK_SAMPLES training samples are put side by side in ONE row and the model's own loss on it is
    compared with the loss of the same samples as a padded batch (eval mode, no dropout). A model or method
    that lets packed samples attend to each other (custom modelling code that ignores restarting position ids,
    prompt-learning methods whose virtual tokens sit in front of the row) fails the check and trains padded.
    """
    n = min(len(samples), PACK_CHECK_SAMPLES)
    features = [samples[i] for i in range(n)]
    features = [f for f in features if any(x != -100 for x in list(f["labels"])[1:])]
    if len(features) < 2:
        return None  # nothing that could attend across samples
    packed = PackedRowsCollator(sum(len(f["input_ids"]) for f in features), pad_id(tokenizer))
    padded = padded_collator(tokenizer)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            one_row = float(model(**packed.pack(features, [list(range(len(features)))]), use_cache=False).loss)
            plain = float(model(**padded(features), use_cache=False).loss)
    except Exception as e:  # a model that refuses position ids or the layout
        return f"the model failed on a packed row: {type(e).__name__}: {e}"
    finally:
        model.train(was_training)
    if not math.isfinite(one_row) or not math.isclose(one_row, plain, rel_tol=CHECK_RTOL):
        return f"loss on {len(features)} samples in one row {one_row:.6f} differs from padded {plain:.6f}"
    return None


def cpu_settings(cfg: RunConfig) -> dict[str, Any]:
    """Apply the matmul route for this process; returns what was decided (logged, and kept in data_stats)."""
    if torch.cuda.is_available():
        return {"device": "cuda"}
    route = use_onednn_fp32(cfg.train.onednn_fp32)
    bf16 = native_bf16()
    if cfg.train.bf16_autocast and not bf16:
        log.warning(
            "train.bf16_autocast: this CPU has no native bf16 matmul (AVX512-BF16/AMX); bf16 is emulated, slowly"
        )
    log.info("fp32 matmul via oneDNN: %s (%s); native bf16: %s", route.used, route.reason, bf16)
    return {"onednn_fp32": route.used, "onednn_fp32_reason": route.reason, "native_bf16": bf16}


class SpeedTrainer(Trainer):
    """transformers' Trainer with the label-only, chunked loss (train.label_only_logits).

    The loss path is checked once, on a slice of the first training batch, against the model's own loss;
    a model where it deviates (or cannot apply) trains on the plain path, with a warning saying why.
    """

    def __init__(self, *args: Any, label_only_logits: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label_only: tuple[Any, Any] | None = None
        self._checked = not label_only_logits

    def _check_label_only(self, model: Any, inputs: dict[str, Any]) -> None:
        self._checked = True
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


__all__ = ["SpeedTrainer", "cpu_settings", "packing_mismatch", "packing_refusal", "sft_collator"]
