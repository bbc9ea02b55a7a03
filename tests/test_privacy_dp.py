"""DP-SGD fine-tuning (privacy:): exact steps against plain autograd, clipping, ε against opacus' own accountants,
refusals at load, bad input, per-step ε in metrics.jsonl, the budget, user-level units, resume."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F
from transformers import TrainerCallback, set_seed

from tests.test_sft import cfg_file, make_cfg, write_alpaca
from tests.tiny import build_model, build_tokenizer
from tuneforge.cli import load_config
from tuneforge.config import DP_STAGES, ConfigError, RunConfig
from tuneforge.config.privacy_section import REFUSED, VERIFIED
from tuneforge.data.build import build_sft
from tuneforge.data.schema import DataError
from tuneforge.methods import METHOD_PARAMS, METHODS, apply_method, model_load_kwargs
from tuneforge.models.loader import load_model, load_tokenizer
from tuneforge.privacy.dp import EXTRA_ALPHAS, DPError, epsilon
from tuneforge.privacy.dp_grads import check_memory, check_per_sample_gradients, make_hooks
from tuneforge.privacy.dp_loss import per_sample_loss
from tuneforge.privacy.dp_trainer import LEDGER_FILE
from tuneforge.stages import STAGES, run_stage

pytest.importorskip("opacus")


class Weights(TrainerCallback):
    """The trainable weights before and after training, by parameter name."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    @staticmethod
    def _grab(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_begin(self, args, state, control, model=None, **kw):  # type: ignore[no-untyped-def]
        self.before = self._grab(model)

    def on_train_end(self, args, state, control, model=None, **kw):  # type: ignore[no-untyped-def]
        self.after = self._grab(model)


def dp_cfg(tmp_path: Path, model_dir: Path, privacy: dict[str, Any], **sections: Any) -> RunConfig:
    raw = make_cfg(tmp_path, model_dir, privacy=privacy, **sections)
    return load_config(cfg_file(tmp_path, raw), [])


def fresh_model(cfg: RunConfig) -> tuple[Any, list[dict[str, Any]]]:
    """The run's model as load_trainable builds it (same seed) and its training rows, independently of the trainer."""
    tokenizer = load_tokenizer(cfg.model)
    rows = build_sft(cfg.data, tokenizer).train
    set_seed(cfg.train.seed)
    model = load_model(cfg.model, tokenizer, **model_load_kwargs(cfg.method))
    model.config.use_cache = False
    return apply_method(model, cfg.method), [rows[i] for i in range(len(rows))]


def row_gradients(model: Any, rows: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
    """Each row's gradient alone (no padding, no batch): of the mean cross-entropy over the row's label tokens."""
    model.train()
    out = []
    for row in rows:
        model.zero_grad()
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor(row["labels"][1:])
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
        keep = labels != -100
        F.cross_entropy(logits[keep].float(), labels[keep]).backward()
        out.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    model.zero_grad()
    return out


def norm(grad: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grad.values()))


SGD = {"optim": "sgd", "lr_scheduler": "constant", "weight_decay": 0.0, "max_steps": 1, "logging_steps": 1}


# --- (1) one DP step with noise 0 and no clipping is the plain step ---------------------------------------------

EXACT = [  # (method, train.grad_accum): grad_accum 2 splits each Poisson batch into two clipped passes
    ({"name": "lora", "r": 4, "alpha": 8}, 1),
    ({"name": "lora", "r": 4, "alpha": 8}, 2),
    ({"name": "dora", "r": 4}, 1),
    ({"name": "ia3"}, 1),
    ({"name": "ln_tuning"}, 1),
    ({"name": "bitfit"}, 1),
    ({"name": "full"}, 1),
    ({"name": "full"}, 2),
]


@pytest.mark.parametrize(("method", "grad_accum"), EXACT, ids=lambda x: x["name"] if isinstance(x, dict) else str(x))
def test_noiseless_unclipped_dp_step_equals_the_plain_step(
    tmp_path: Path, tiny_model_dir: Path, method: dict[str, Any], grad_accum: int
) -> None:
    n = 8
    data = {"datasets": [{"path": str(write_alpaca(tmp_path / "eight.jsonl", n)), "format": "alpaca"}]}
    # every unit in every batch (sample rate 1), so the DP mean (divided by the expected batch) is the plain mean
    train = {**SGD, "lr": 0.5, "batch_size": n // grad_accum, "grad_accum": grad_accum}
    privacy = {"noise_multiplier": 0.0, "max_grad_norm": 1e9}
    cfg = dp_cfg(tmp_path, tiny_model_dir, privacy, method=method, train=train, data=data)
    weights = Weights()
    result = run_stage(cfg, callbacks=[weights])
    assert result.steps == 1 and result.privacy is not None and result.privacy["epsilon"] is None  # no noise: ε = ∞

    model, rows = fresh_model(cfg)
    start = {k: v for k, v in model.named_parameters() if v.requires_grad}
    for name, value in start.items():
        torch.testing.assert_close(weights.before[name], value.detach(), rtol=0, atol=0)
    grads = row_gradients(model, rows)  # each row alone, by plain autograd
    for name in start:
        plain = weights.before[name] - 0.5 * sum(g[name] for g in grads) / n
        torch.testing.assert_close(weights.after[name], plain, rtol=2e-4, atol=1e-6, msg=name)
    assert any(not torch.equal(weights.after[k], weights.before[k]) for k in start)


@pytest.mark.parametrize("name", sorted(VERIFIED))
def test_per_sample_gradients_of_every_verified_method_match_autograd(name: str, tiny_model_dir: Path) -> None:
    """The run-start check (opacus issue #820) on the tiny model, for every method DP-SGD accepts."""
    from transformers import AutoModelForCausalLM

    if name == "qlora":
        pytest.importorskip("bitsandbytes")
    extra = {"fourierft": {"n_frequency": 64}}.get(name, {})  # the tiny model's layers hold 32 x 32 weights
    params = METHOD_PARAMS[name].model_validate({"name": name, **extra})
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **model_load_kwargs(params))  # qlora: 4-bit
    base.config.use_cache = False
    model = apply_method(base, params)
    batch = tiny_batch()
    hooks = make_hooks(model)
    try:
        worst = check_per_sample_gradients(model, hooks, lambda m, b: per_sample_loss(m, b), batch)
    finally:
        hooks.cleanup()
    assert worst < 1e-3


def tiny_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 300, (3, 12), generator=g)
    ids[:, 5] = build_tokenizer("chatml").pad_token_id  # ChatML's <|im_end|>: the embedding's padding_idx
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_the_check_refuses_per_sample_gradients_opacus_gets_wrong() -> None:
    # prompt tuning's virtual tokens are embedded once and broadcast over the batch: opacus sees one "sample"
    tok = build_tokenizer("chatml")
    model = apply_method(build_model(tok), METHOD_PARAMS["prompt_tuning"].model_validate({"name": "prompt_tuning"}))
    hooks = make_hooks(model)
    try:
        with pytest.raises(DPError, match=r"per-sample gradients are wrong|per-sample gradients for 1 rows"):
            check_per_sample_gradients(model, hooks, lambda m, b: per_sample_loss(m, b), tiny_batch())
    finally:
        hooks.cleanup()


def test_every_method_is_verified_or_refused_with_a_reason() -> None:
    assert set(VERIFIED) | set(REFUSED) == set(METHODS) and not set(VERIFIED) & set(REFUSED)
    assert {name for name, row in STAGES.items() if "privacy" in row.sections} == set(DP_STAGES)


# --- (2) clipping bounds each sample's contribution ----------------------------------------------------------


def test_clipping_bounds_each_samples_contribution(tmp_path: Path, tiny_model_dir: Path) -> None:
    n = 4
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{2 * i}."} for i in range(n - 1)]
    poison = " ".join(f"zebra quartz {i}" for i in range(20))  # a long, unlikely answer: a huge loss
    rows.append({"instruction": "Say it.", "input": "", "output": poison})
    data = tmp_path / "poisoned.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    datasets = {"datasets": [{"path": str(data), "format": "alpaca"}]}
    probe = dp_cfg(tmp_path, tiny_model_dir, {"noise_multiplier": 0.0}, data=datasets, train={**SGD, "batch_size": n})
    model, samples = fresh_model(probe)
    grads = row_gradients(model, samples)
    norms = [norm(g) for g in grads]
    poisoned = max(range(n), key=lambda i: norms[i])  # the largest gradient
    clip = norms[poisoned] / 4

    lr = 1.0
    cfg = dp_cfg(
        tmp_path,
        tiny_model_dir,
        {"noise_multiplier": 0.0, "max_grad_norm": clip},
        name="clipped",
        data=datasets,
        train={**SGD, "lr": lr, "batch_size": n},
    )
    weights = Weights()
    run_stage(cfg, callbacks=[weights])
    step = {k: weights.after[k] - weights.before[k] for k in weights.after}
    factors = [min(1.0, clip / x) for x in norms]
    for name in step:  # opacus' clipping, exactly: -lr/N · Σ_i min(1, C/|g_i|) g_i
        want = -lr / n * sum(f * g[name] for f, g in zip(factors, grads, strict=True))
        torch.testing.assert_close(step[name], want, rtol=2e-4, atol=1e-7, msg=name)
    others = {
        k: -lr / n * sum(f * g[k] for i, (f, g) in enumerate(zip(factors, grads, strict=True)) if i != poisoned)
        for k in step
    }
    moved_by_poison = norm({k: step[k] - others[k] for k in step})
    assert moved_by_poison == pytest.approx(lr * clip / n, rel=1e-3)  # C·lr/N: clipped from 4 times that


# --- (3, 6) a run: ε per step in metrics.jsonl, (ε, δ) in result.json, equal to opacus' own numbers -----------


def test_dp_run_logs_epsilon_every_step_and_reports_opacus_numbers(tmp_path: Path, tiny_model_dir: Path) -> None:
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    train = {"max_steps": 3, "batch_size": 4, "logging_steps": 2}  # step 3 is not a Trainer log step
    cfg = dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 3.0}, train=train)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_stage(cfg)
    # neither opacus' "optimal order is the largest alpha" nor torch's full-backward-hook notice reach the user
    noise = [str(w.message) for w in caught if "largest alpha" in str(w.message) or "backward hook" in str(w.message)]
    assert noise == []
    # the run's config.yaml (every default spelled out) loads again: audit and eval read it
    again = load_config(result.run_dir / "config.yaml", [])
    assert again.privacy.epsilon == 3.0 and again.train.max_grad_norm == cfg.train.max_grad_norm
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    per_step = {r["step"]: r["epsilon"] for r in rows if "epsilon" in r}
    assert sorted(per_step) == [1, 2, 3]
    assert per_step[1] < per_step[2] < per_step[3] <= 3.0
    saved = json.loads((result.run_dir / "result.json").read_text())["privacy"]
    n, q, sigma, delta = 24, 4 / 24, saved["noise_multiplier"], saved["delta"]
    assert saved["units"] == n and saved["sample_rate"] == pytest.approx(q) and delta == pytest.approx(1 / n)
    assert saved["steps"] == 3 and saved["accountant"] == "prv" and saved["guarantee"] is True
    assert sigma == pytest.approx(
        get_noise_multiplier(target_epsilon=3.0, target_delta=delta, sample_rate=q, steps=3, accountant="prv")
    )
    alphas = [*RDPAccountant.DEFAULT_ALPHAS, *EXTRA_ALPHAS]  # the orders docs/privacy.md names
    rdp, prv = RDPAccountant(), PRVAccountant()
    rdp.history = prv.history = [(sigma, q, 3)]
    assert saved["epsilon_rdp"] == pytest.approx(rdp.get_epsilon(delta, alphas=alphas), rel=1e-9)
    assert saved["epsilon_prv"] == pytest.approx(prv.get_epsilon(delta), rel=1e-9)
    assert saved["epsilon"] == saved["epsilon_prv"] <= 3.0
    assert per_step[3] == pytest.approx(saved["epsilon"], abs=1e-6)
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_training_stops_before_the_budget_is_overshot(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuneforge.privacy.dp as dp

    calibrated = dp.calibrate
    # a noise below the calibrated one (as an accountant disagreeing with the calibration would leave it): the
    # budget then allows fewer steps than planned
    monkeypatch.setattr(dp, "calibrate", lambda *a: 0.85 * calibrated(*a))
    cfg = dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 4.0, "accountant": "rdp"}, train={"max_steps": 6})
    result = run_stage(cfg)
    report = result.privacy
    assert report is not None and 1 <= result.steps == report["budget_steps"] < report["planned_steps"] == 6
    assert report["epsilon"] <= 4.0
    over = [(report["noise_multiplier"], report["sample_rate"], result.steps + 1)]
    assert epsilon("rdp", over, report["delta"]) > 4.0  # one more step would have overshot


def test_an_empty_poisson_batch_is_a_noise_only_step(tmp_path: Path, tiny_model_dir: Path) -> None:
    n, q = 24, 1 / 24
    # a seed whose first Poisson draw (opacus' sampler, seeded with train.seed) samples no unit at all
    seed = next(s for s in range(1000) if not (torch.rand(n, generator=torch.Generator().manual_seed(s)) < q).any())
    train = {**SGD, "batch_size": 1, "seed": seed, "lr": 0.1}
    cfg = dp_cfg(tmp_path, tiny_model_dir, {"noise_multiplier": 1.0}, train=train)
    weights = Weights()
    result = run_stage(cfg, callbacks=[weights])
    assert result.steps == 1 and result.train_loss == 0.0 and result.privacy["epsilon_rdp"] > 0  # a step counted
    assert any(not torch.equal(weights.after[k], weights.before[k]) for k in weights.after)  # the noise


def test_pt_with_privacy_trains_documents_as_their_own_rows(tmp_path: Path, tiny_model_dir: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"The fox jumps over the dog {i} times." for i in range(12)) + "\n")
    data = {"datasets": [{"path": str(corpus)}], "cutoff_len": 16}
    cfg = dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 8.0}, stage="pt", data=data, train={"max_steps": 2})
    result = run_stage(cfg)
    assert result.steps == 2 and result.privacy["units"] == 12 and result.privacy["epsilon"] <= 8.0


# --- (4, 5) refused at load, bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["method=adalora"], "adalora.*raw, unclipped gradients"),
        (["method=prompt_tuning"], "broadcasts them over the batch"),
        (["method=oft"], "buffers"),
        (["method=loha"], "autograd.Function"),
        (["method=dora", "method.dropout=0.1"], r"method\.dropout=0\.1.*set method\.dropout=0"),
        (["method=lora", "method.use_dora=true", "method.dropout=0.1"], r"set method\.dropout=0"),
        (["method=ia3"], None),
        (["method=lora", "method.dropout=0.1"], None),
        (["data.packing=true"], "data.packing"),
        (["train.gradient_checkpointing=true"], "gradient_checkpointing"),
        (["train.max_grad_norm=0.5"], "privacy.max_grad_norm"),
        (["model.dtype=float16"], "float16"),
        (["distributed.strategy=fsdp"], "one process"),
        (["distributed.backend=ray"], "one process"),
        (["stage=dpo"], "section `privacy` applies to stage 'pt' or 'sft'"),
        (["privacy.unit=user"], "needs user_column"),
        (["privacy.user_column=author"], "read with unit user"),
    ],
)
def test_combinations_that_break_per_sample_gradients_are_refused_at_load(
    tmp_path: Path, tiny_model_dir: Path, overrides: list[str], match: str | None
) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, privacy={"epsilon": 8})
    path = cfg_file(tmp_path, raw)
    if match is None:  # a replayed method without dropout loads
        assert load_config(path, overrides).privacy.enabled
        return
    with pytest.raises(ConfigError, match=match):
        load_config(path, overrides)


@pytest.mark.parametrize(
    ("privacy", "match"),
    [
        ({"epsilon": 0}, r"privacy\.epsilon = 0: epsilon must be > 0"),
        ({"epsilon": -1}, "epsilon must be > 0"),
        ({"epsilon": 8, "delta": 1.0}, "delta must lie strictly between 0 and 1"),
        ({"epsilon": 8, "delta": 0}, "delta must lie strictly between 0 and 1"),
        ({"epsilon": 8, "delta": -0.1}, "delta must lie strictly between 0 and 1"),
        ({"epsilon": 8, "noise_multiplier": 1.0}, "exactly one of privacy.epsilon .* got both"),
        ({"max_grad_norm": 2.0}, "exactly one of privacy.epsilon .* got neither"),
        ({"noise_multiplier": -1}, "noise_multiplier must be >= 0"),
        ({"epsilon": 8, "accountant": "gdp"}, "accountant"),
    ],
)
def test_bad_privacy_settings_are_clear_errors(
    tmp_path: Path, tiny_model_dir: Path, privacy: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir, privacy=privacy)), [])


def test_an_unreachable_budget_and_an_oversized_batch_are_refused_before_the_model_loads(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    cfg = dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 8}, train={"batch_size": 32})
    with pytest.raises(DPError, match="32 expected units per step, but the training set has only 24"):
        run_stage(cfg)
    assert not (tmp_path / "runs" / "t").exists()


def write_users(path: Path, missing_at: int | None = None) -> Path:
    users = ["ana"] * 5 + ["bo"] * 3 + ["cy"]
    rows = []
    for i, user in enumerate(users):
        row: dict[str, Any] = {"instruction": f"Add {i} and {i}.", "input": "", "output": f"{2 * i}.", "user": user}
        if i == missing_at:
            row.pop("user")
        rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_a_row_without_its_user_is_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_users(tmp_path / "users.jsonl", missing_at=3)
    datasets = {"datasets": [{"path": str(data), "format": "alpaca"}]}
    cfg = dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 8, "unit": "user", "user_column": "user"}, data=datasets)
    with pytest.raises(DataError, match=r"users\.jsonl:4: no value in the user column 'user'"):
        run_stage(cfg)


# --- (7) user-level units ---------------------------------------------------------------------------------------


def test_user_level_units_sample_users_one_record_each(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tuneforge.privacy.dp import group_units
    from tuneforge.privacy.dp_trainer import UnitRows

    data = write_users(tmp_path / "users.jsonl")
    datasets = {"datasets": [{"path": str(data), "format": "alpaca"}]}
    privacy = {"epsilon": 8, "unit": "user", "user_column": "user", "delta": 1e-2}
    cfg = dp_cfg(tmp_path, tiny_model_dir, privacy, data=datasets, train={"max_steps": 2, "batch_size": 2})
    tokenizer = load_tokenizer(cfg.model)
    rows = build_sft(cfg.data, tokenizer, "user", "user").train
    members = group_units(rows["unit"])
    assert sorted(len(m) for m in members) == [1, 3, 5]
    draws = UnitRows(rows, members, seed=0)
    picked = [draws[0]["input_ids"] for _ in range(30)]  # user "ana"'s rows, drawn uniformly
    assert len({tuple(x) for x in picked}) == 5 and "unit" not in draws[0]

    result = run_stage(cfg)
    report = result.privacy
    assert report["unit"] == "user" and report["units"] == 3 and report["sample_rate"] == pytest.approx(2 / 3)
    assert report["delta"] == 1e-2 and report["epsilon"] <= 8


# --- resume: the accountants continue --------------------------------------------------------------------------


def test_resume_continues_the_accountants(tmp_path: Path, tiny_model_dir: Path) -> None:
    train = {"max_steps": 4, "save_steps": 2, "batch_size": 4}
    ref = run_stage(dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 6}, name="ref", train=train))
    cut = dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 6}, name="cut", train=train)
    run = run_stage(cut).run_dir
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")  # as if it had stopped after step 2
    shutil.rmtree(run / "adapter")
    (run / "result.json").unlink()
    resumed = run_stage(cut.model_copy(update={"train": cut.train.model_copy(update={"resume": True})}))
    assert resumed.steps == 4
    assert resumed.privacy["epsilon"] == pytest.approx(ref.privacy["epsilon"], rel=1e-9)
    got = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (ref.run_dir / "metrics.jsonl").read_text().splitlines()]
    eps = lambda rows: [(r["step"], round(r["epsilon"], 6)) for r in rows if "epsilon" in r]  # noqa: E731
    assert eps(got) == eps(want)
    losses = lambda rows: [r["loss"] for r in rows if "loss" in r]  # noqa: E731
    assert losses(got) == pytest.approx(losses(want), rel=1e-5)  # the same Poisson batches and noise

    (run / "checkpoints" / "checkpoint-4" / LEDGER_FILE).unlink()
    shutil.rmtree(run / "adapter")
    (run / "result.json").unlink()
    with pytest.raises(DPError, match="privacy spent before it is unknown"):
        run_stage(cut.model_copy(update={"train": cut.train.model_copy(update={"resume": True})}))


def test_per_sample_gradients_that_cannot_fit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    model = build_model(build_tokenizer("chatml"))

    class Tiny:
        available = 1024

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    with pytest.raises(DPError, match=r"lower train\.batch_size"):
        check_memory(model, 8)


def test_opacus_embedding_sampler_needs_the_padding_row_fix() -> None:
    """Full tuning on a batch holding the pad token: opacus' hooks fail the check, ours (pad row zeroed) pass."""
    from opacus.grad_sample.utils import prepare_module

    batch = tiny_batch()  # holds <|im_end|>, the tiny ChatML model's pad token and its embedding's padding_idx
    tok = build_tokenizer("chatml")
    for fixed in (False, True):
        model = apply_method(build_model(tok), METHOD_PARAMS["full"].model_validate({"name": "full"}))
        hooks = make_hooks(model) if fixed else prepare_module(model, "hooks", wrap_model=False)
        try:
            if fixed:
                assert check_per_sample_gradients(model, hooks, lambda m, b: per_sample_loss(m, b), batch) < 1e-3
            else:
                with pytest.raises(DPError, match=r"embed_tokens"):
                    check_per_sample_gradients(model, hooks, lambda m, b: per_sample_loss(m, b), batch)
        finally:
            hooks.cleanup()


def test_copies_made_by_mixing_are_one_sample_unit(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = {"datasets": [{"path": str(write_alpaca(tmp_path / "six.jsonl", 6)), "format": "alpaca"}], "mix_size": 15}
    cfg = dp_cfg(tmp_path, tiny_model_dir, {"epsilon": 8}, data=data)
    built = build_sft(cfg.data, load_tokenizer(cfg.model), "sample")
    assert len(built.train) == 15 and built.stats["privacy_units"] == 6  # 15 rows, 6 records: 6 units
