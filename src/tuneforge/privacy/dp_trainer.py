"""DP-SGD inside transformers' Trainer: a mixin over a stage's own trainer class (`dp_trainer_class(SFTTrainer)`).

Modelled on microsoft/dp-transformers' OpacusDPTrainer (opacus objects built inside the Trainer, the loss
unscaled by accumulation, accountants stepped per optimiser step), with these differences:

- the model is not wrapped: opacus' GradSampleHooks attach to it in place (dp_grads.py), so the Trainer's
  checkpoints, PEFT adapters and the skeleton's saving see the model as it is;
- batches are opacus' Poisson batches of privacy units (DPDataLoader over `UnitRows`): a sampled unit gives one
  of its rows, so a user-level unit contributes one sample per step (dp-transformers' author sampling);
- gradient accumulation splits each Poisson batch into passes of at most train.batch_size rows, each clipped and
  accumulated by opacus' DPOptimizer (signal_skip_step, as opacus' BatchMemoryManager does), one noisy step per
  batch: the Trainer itself runs with gradient_accumulation_steps=1 (`dp_training_arguments`);
- the loss is a per-sample mean (dp_loss.py); ε of both accountants goes into metrics.jsonl every step, the
  budget stops training before it is overshot, and the accountants' history is saved with each checkpoint and
  restored on resume.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from tuneforge.models.loss import label_only_parts
from tuneforge.privacy.dp import PrivacyLedger, PrivacyPlan, opacus
from tuneforge.privacy.dp_grads import (
    check_memory,
    check_per_sample_gradients,
    check_replayable,
    make_hooks,
    quiet_hooks,
)
from tuneforge.privacy.dp_loss import head_is_frozen, per_sample_loss
from tuneforge.runs import RunDir

log = logging.getLogger("tuneforge.privacy")

LEDGER_FILE = "privacy_accountant.json"  # in each checkpoint-<step>/ folder (the Trainer's checkpoint layout)
LOSS_RTOL = 1e-4  # the label-only per-sample loss against the plain one, at run start


def dp_training_arguments(plan: PrivacyPlan) -> dict[str, Any]:
    """TrainingArguments overrides of a DP-SGD run: the steps the budget allows (the planned ones, unless the
    accountant finds the calibrated noise short of them: the Trainer never takes a step past the budget), one
    Poisson batch per step (the passes inside it are the trainer's), no batch-gradient clipping (per-sample
    clipping replaces it)."""
    return {"max_steps": plan.budget_steps, "gradient_accumulation_steps": 1, "max_grad_norm": 0.0}


class UnitRows(TorchDataset):  # type: ignore[type-arg]
    """Item u = one row of privacy unit u, drawn uniformly from the unit's rows (seeded, so a resumed run that
    re-draws its skipped batches draws the same rows); the `unit` column is dropped."""

    def __init__(self, rows: Any, members: tuple[tuple[int, ...], ...], seed: int) -> None:
        self.rows = rows
        self.members = members
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, unit: int) -> dict[str, Any]:
        rows = self.members[unit]
        pick = rows[int(torch.randint(len(rows), (1,), generator=self.generator))] if len(rows) > 1 else rows[0]
        return {k: v for k, v in self.rows[int(pick)].items() if k != "unit"}


class DPTrainerMixin(Trainer):
    """Put first in the bases of a stage's Trainer subclass (see `dp_trainer_class`)."""

    def __init__(
        self, *args: Any, privacy_plan: PrivacyPlan, run_dir: RunDir, label_only: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.label_only_wanted = label_only
        self.plan = privacy_plan
        self.ledger = PrivacyLedger(privacy_plan)
        self.run_dir = run_dir
        self.dp_optimizer: Any = None
        model: Any = self.model
        check_memory(model, privacy_plan.physical_batch)
        check_replayable(model)
        self.grad_hooks = make_hooks(model)
        self.loss_parts = self._choose_loss_path(model)
        batch = self._check_batch()
        check_per_sample_gradients(model, self.grad_hooks, self._loss, batch)
        self.add_callback(PrivacyCallback(self))

    # --- the loss, and its run-start checks ----------------------------------------------------------------

    def _loss(self, model: Any, inputs: dict[str, Any]) -> Any:
        return per_sample_loss(model, inputs, self.loss_parts)

    def _choose_loss_path(self, model: Any) -> tuple[Any, Any] | None:
        if not self.label_only_wanted:
            return None
        parts = label_only_parts(model)
        if isinstance(parts, str):
            log.info("privacy: per-sample loss from the full logits (%s)", parts)
            return None
        if not head_is_frozen(parts):
            log.info("privacy: per-sample loss from the full logits (the lm_head trains)")
            return None
        return parts

    def _check_batch(self) -> dict[str, Any]:
        """Up to 4 training rows (of different units), collated, for the run-start checks."""
        units = range(min(4, len(self.plan.members)))
        data: Any = self.train_dataset
        rows = [{k: v for k, v in data[self.plan.members[u][0]].items() if k != "unit"} for u in units]
        batch = self._prepare_inputs(dict(self.data_collator(rows)))
        if self.loss_parts is not None:
            model: Any = self.model
            with torch.no_grad():
                plain = per_sample_loss(model, batch, None)
                fast = per_sample_loss(model, batch, self.loss_parts)
            if not torch.allclose(fast, plain, rtol=LOSS_RTOL, atol=1e-6):
                log.warning("train.label_only_logits: not applied with privacy (per-sample losses differ)")
                self.loss_parts = None
            else:
                log.info("privacy: label-only per-sample loss (checked against the full logits)")
        return batch

    # --- the Poisson loader and the DP optimiser --------------------------------------------------------------

    def get_train_dataloader(self) -> Any:
        """opacus' DPDataLoader: Poisson sampling of units at the plan's rate, empty batches kept (their step is
        noise only); its seeded generator makes a resumed run re-draw the batches it skips."""
        from opacus.data_loader import DPDataLoader

        seed = self.args.seed
        units = UnitRows(self.train_dataset, self.plan.members, seed + 1)
        loader = DPDataLoader(
            units,
            sample_rate=self.plan.sample_rate,
            collate_fn=self.data_collator,
            generator=torch.Generator().manual_seed(seed),
            num_workers=0,
        )
        # opacus' CollateFnWithEmpty builds an empty batch in the layout of the first non-empty one it collated, and
        # returns [] when the very first batch is empty; give it the layout up front (one row, collated).
        empty_safe = loader.collate_fn
        if getattr(empty_safe, "first_batch", False) is None:
            data: Any = self.train_dataset
            first = {k: v for k, v in data[0].items() if k != "unit"}
            empty_safe.first_batch = dict(self.data_collator([first]))
        return loader

    def create_optimizer(self, model: Any = None) -> Any:
        optimizer = super().create_optimizer(model)
        DPOptimizer = opacus().optimizers.DPOptimizer
        if not isinstance(optimizer, DPOptimizer):
            optimizer = DPOptimizer(
                optimizer,
                noise_multiplier=self.plan.noise_multiplier,
                max_grad_norm=self.plan.max_grad_norm,
                expected_batch_size=self.plan.expected_batch,
                loss_reduction="mean",
            )
            optimizer.attach_step_hook(self.ledger.step_hook)
        self.optimizer = self.dp_optimizer = optimizer
        return optimizer

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """One Poisson batch: passes of at most train.batch_size rows, each clipped and accumulated by the
        DPOptimizer; the Trainer's optimizer.step() after this adds the noise once (and steps the accountants)."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        optimizer = self.dp_optimizer
        optimizer.zero_grad()  # the Trainer clears .grad only; opacus' per-sample state must go too
        params = [p for p in model.parameters() if p.requires_grad]
        rows = int(inputs["input_ids"].shape[0])
        if rows == 0:  # an empty Poisson batch: zero-row per-sample gradients, so the step is noise only
            for p in params:
                p.grad_sample = p.new_zeros((0, *p.shape))
            return torch.zeros((), device=self.args.device)
        size = self.plan.physical_batch
        total = torch.zeros((), device=self.args.device)
        for start in range(0, rows, size):
            part = {k: (v[start : start + size] if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
            with self.compute_loss_context_manager():
                losses = self._loss(model, part)
            with quiet_hooks():
                self.accelerator.backward(losses.mean())
            total += losses.detach().sum()
            for p in params:
                p.grad = None  # the non-private batch gradient is never used (DPOptimizer writes .grad)
            if start + size < rows:
                optimizer.signal_skip_step(do_skip=True)
                optimizer.step()  # clip and accumulate this pass; no noise, no update
                optimizer.zero_grad()
        return total / rows

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        return None  # the Trainer's norm is of the non-private gradient: not computed, not logged

    # --- logging, checkpoints, resume ------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training step's row: ε by both accountants
            logs = {**logs, **self.ledger.record(both=True)}
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.ledger.load(Path(resume_from_checkpoint) / LEDGER_FILE)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            self.grad_hooks.cleanup()  # per-sample state off the parameters; the model saves as it is
            model: Any = self.model
            for module in model.modules():
                module.__dict__.pop("_tuneforge_stateless", None)  # dp_grads' replay copies

    def privacy_report(self) -> dict[str, Any]:
        return self.ledger.report()


class PrivacyCallback(TrainerCallback):
    """Per step: ε into metrics.jsonl (the Trainer's own log row when it logs this step, else a row of its own), the
    budget, and the accountants' history into each checkpoint."""

    def __init__(self, trainer: DPTrainerMixin) -> None:
        self.trainer = trainer

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any):
        ledger = self.trainer.ledger
        if ledger.steps != state.global_step or not ledger.uniform:
            raise RuntimeError(
                f"accountants at {ledger.steps} steps ({ledger.accountants[ledger.plan.accountant].history}) after "
                f"optimiser step {state.global_step}: every step must be one noisy step at the plan's sample rate"
            )
        if not control.should_log and self.trainer.run_dir.writes:  # the Trainer's flow callback decided before us
            self.trainer.run_dir.append_metrics({"step": state.global_step, **_finite(ledger.record(both=False))})
        plan = ledger.plan
        if plan.target_epsilon is not None and ledger.steps >= plan.budget_steps:
            if ledger.steps < plan.steps:
                log.warning(
                    "privacy: budget ε=%s spent after %d of %d planned steps: training stops",
                    plan.target_epsilon,
                    ledger.steps,
                    plan.steps,
                )
            control.should_training_stop = True
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any):
        folder = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            self.trainer.ledger.save(folder / LEDGER_FILE)


def _finite(record: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in record.items() if math.isfinite(v)}


def dp_trainer_class(base: type[Trainer]) -> type[Trainer]:
    """`base` (a stage's Trainer class) with DP-SGD: construct it with privacy_plan=..., run_dir=... added."""
    return type(f"DP{base.__name__}", (DPTrainerMixin, base), {})


__all__ = ["LEDGER_FILE", "DPTrainerMixin", "UnitRows", "dp_trainer_class", "dp_training_arguments"]
