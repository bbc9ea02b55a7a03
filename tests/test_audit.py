"""Leakage audits (tuneforge.audit): canary exposure, loss-based membership inference, the `audit` verb."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tuneforge.audit import AuditError
from tuneforge.audit.canary import (
    candidate_sample,
    exposure,
    exposures,
    extrapolated_exposure,
    rank_among,
    sampled_exposure,
)
from tuneforge.audit.mia import attack_figures, auc, membership, roc_curve, stratified_indices, tpr_at_fpr
from tuneforge.audit.run import AuditRequest, run_audit
from tuneforge.cli import load_config, main
from tuneforge.config import ConfigError, DataConfig
from tuneforge.data.build import build_sft
from tuneforge.data.canaries import Canary, CanaryRecord, draw
from tuneforge.data.preference import build_preference
from tuneforge.data.render import render_conversation
from tuneforge.data.schema import DataError
from tuneforge.eval.metrics import roc_auc
from tuneforge.runs import RunDir, RunFolderError
from tuneforge.stages import run_stage

BATCH = 100  # audits score the 1000 candidate secrets of 3 digits in ten forward passes of the tiny model
CANARIES = {"count": 2, "repeats": [1, 6], "digits": 3, "references": 4, "format": "code {secret}", "prompt": "code?"}


def write_alpaca(path: Path, n: int, start: int = 0) -> Path:
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{2 * i}."} for i in range(start, n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def run_config(tmp: Path, model_dir: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "canary",
        "model": {"path": str(model_dir)},
        "data": {
            "datasets": [{"path": str(write_alpaca(tmp / "train.jsonl", 8)), "format": "alpaca"}],
            "cutoff_len": 96,
            "val_size": 3,
            "canaries": CANARIES,
            **data,
        },
        "method": {"name": "full"},
        "train": {"max_steps": 24, "batch_size": 6, "lr": 1e-2, "lr_scheduler": "constant", "logging_steps": 8},
        "output": {"dir": str(tmp / "runs")},
    }


def save_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A tiny model trained hard on 5 samples and the canaries (2 once, 2 six times; 4 never): it memorises."""
    tmp = tmp_path_factory.mktemp("audit")
    cfg = load_config(save_yaml(tmp / "canary.yaml", run_config(tmp, tiny_model_dir)), [])
    return Path(run_stage(cfg).run_dir)


# --- exposure arithmetic ------------------------------------------------------------------------------------------


def test_exposure_is_log2_space_minus_log2_rank() -> None:
    assert exposure(1, 1024) == 10.0
    assert exposure(1024, 1024) == 0.0
    assert exposure(4, 1024) == 8.0
    assert exposure(3, 10**6) == pytest.approx(math.log2(10**6) - math.log2(3))
    with pytest.raises(ValueError):
        exposure(0, 10)


def test_rank_counts_lower_candidates_and_half_the_ties() -> None:
    others = np.array([1.0, 2.0, 2.0, 5.0, 7.0])
    assert rank_among(0.5, others) == 1  # the most likely
    assert rank_among(2.0, others) == 1 + 1 + 1  # one lower, two tied
    assert rank_among(6.0, others) == 5
    assert rank_among(9.0, others) == 6  # the least likely of six


def record(digits: int, canaries: list[tuple[str, int]]) -> CanaryRecord:
    rows = tuple(Canary(s, r, f"code {s}") for s, r in canaries)
    return CanaryRecord("chat", "code {secret}", "code?", digits, 0, rows)


def test_exact_exposures_on_hand_ranked_candidates() -> None:
    # 100 candidates with log-perplexity = their number + 10, except two the "model" prefers
    table = {f"{v:02d}": float(v + 10) for v in range(100)}
    table["42"], table["07"] = 0.5, 3.0
    rec = record(2, [("42", 4), ("07", 1), ("50", 0)])
    out = exposures(rec, lambda secrets: np.array([table[s] for s in secrets]), candidates=100, seed=0)
    assert out["mode"] == "exact" and out["candidates_scored"] == 100
    rows = {r["secret"]: r for r in out["canaries"]}
    assert rows["42"]["rank"] == 1 and rows["42"]["exposure"] == pytest.approx(math.log2(100), abs=1e-4)
    assert rows["07"]["rank"] == 2 and rows["07"]["exposure"] == pytest.approx(math.log2(100) - 1, abs=1e-4)
    # "50" (px 60): below it 42, 07 and the 48 numbers 00..49 other than 07 and 42
    assert rows["50"]["rank"] == 1 + 2 + 48
    groups = {g["repeats"]: g for g in out["by_repeats"]}
    assert sorted(groups) == [0, 1, 4] and groups[0]["inserted"] is False
    assert groups[4]["exposure_mean"] == pytest.approx(math.log2(100), abs=1e-4)


def test_sampled_exposure_equals_the_exact_one_on_the_whole_space() -> None:
    rng = np.random.default_rng(0)
    px = rng.normal(40, 5, size=1000)
    for i in (0, 17, 500):
        others = np.delete(px, i)
        exact = exposure(rank_among(px[i], others), 1000)
        assert sampled_exposure(px[i], others, 1000) == pytest.approx(exact)


def test_extrapolated_exposure_follows_the_fitted_tail_and_stays_in_range() -> None:
    pytest.importorskip("scipy")
    sample = np.random.default_rng(1).normal(40.0, 4.0, size=2000)
    space = 10**6
    # a typical secret: about half the candidates are more likely -> about 1 bit
    assert extrapolated_exposure(40.0, sample, space) == pytest.approx(1.0, abs=0.2)
    # 4 standard deviations below the mean: Pr = 3.2e-5 -> ~15 bits, beyond what 2000 samples resolve (~11)
    assert 13.5 < extrapolated_exposure(24.0, sample, space) < 16.5
    assert sampled_exposure(24.0, sample, space) <= math.log2(2001)
    assert extrapolated_exposure(-1e6, sample, space) == pytest.approx(math.log2(space))  # at most log2 |R|
    assert extrapolated_exposure(1e6, sample, space) == 0.0


def test_sampled_mode_ranks_among_fresh_candidates() -> None:
    pytest.importorskip("scipy")
    rec = record(6, [("123456", 16), ("654321", 0)])
    sample = candidate_sample(rec, 300, seed=3)
    assert len(set(sample)) == 300 and not {"123456", "654321"} & set(sample)
    assert all(len(s) == 6 and s.isdigit() for s in sample)
    assert sample == candidate_sample(rec, 300, seed=3)  # seeded

    def score(secrets: list[str]) -> np.ndarray:  # the inserted secret far more likely than any candidate
        return np.array([5.0 if s == "123456" else 40.0 + int(s) % 7 for s in secrets])

    out = exposures(rec, score, candidates=300, seed=3)
    rows = {r["secret"]: r for r in out["canaries"]}
    assert out["mode"] == "sampled" and out["candidates_scored"] == 300
    assert rows["123456"]["exposure"] > 15 > rows["654321"]["exposure"]
    assert rows["123456"]["exposure_sampled"] == pytest.approx(math.log2(301), abs=1e-4)  # sampling alone: log2(m + 1)


# --- canaries in the data build ---------------------------------------------------------------------------------


def data_config(tmp_path: Path, **over: Any) -> DataConfig:
    raw = {
        "datasets": [{"path": str(write_alpaca(tmp_path / "d.jsonl", 10)), "format": "alpaca"}],
        "cutoff_len": 96,
        "val_size": 3,
        "canaries": CANARIES,
        **over,
    }
    return DataConfig.model_validate(raw)


def test_canaries_are_inserted_exactly_repeats_times_into_the_training_split(tmp_path: Path, chatml_tokenizer) -> None:
    cfg = data_config(tmp_path)
    built = build_sft(cfg, chatml_tokenizer)
    plain = build_sft(cfg.model_copy(update={"canaries": None}), chatml_tokenizer)
    rec = CanaryRecord.from_json(built.canaries, "built")
    assert len(rec.inserted) == 4 and len(rec.references) == 4
    assert sorted(c.repeats for c in rec.inserted) == [1, 1, 6, 6]
    rows = [tuple(r) for r in built.train["input_ids"]]
    val = [tuple(r) for r in built.val["input_ids"]]
    for c in rec.canaries:
        ids = tuple(render_conversation(chatml_tokenizer, rec.sample(c.secret), 96).input_ids)
        assert rows.count(ids) == c.repeats, c  # references: 0
        assert ids not in val
    # the real samples are the same, in the same order; the validation split is untouched
    canary_ids = {
        tuple(render_conversation(chatml_tokenizer, rec.sample(c.secret), 96).input_ids) for c in rec.inserted
    }
    assert [r for r in rows if r not in canary_ids] == [tuple(r) for r in plain.train["input_ids"]]
    assert val == [tuple(r) for r in plain.val["input_ids"]]
    assert built.stats["train"] == len(plain.train) + 14
    assert built.stats["canaries"]["inserted_samples"] == 14 and "canaries" not in built.stats["canaries"]
    assert build_sft(cfg, chatml_tokenizer).canaries == built.canaries  # seeded
    assert draw(cfg.canaries, "chat") == rec  # type: ignore[arg-type]


def test_canary_copies_are_privacy_units_of_their_own(tmp_path: Path, chatml_tokenizer) -> None:
    # DP-SGD with canaries (the audit of a private run): each copy is one sample-level unit, the real rows keep theirs
    cfg = data_config(tmp_path)
    built = build_sft(cfg, chatml_tokenizer, units="sample")
    plain = build_sft(cfg.model_copy(update={"canaries": None}), chatml_tokenizer, units="sample")
    units = built.train["unit"]
    assert len(units) == len(built.train) == len(plain.train) + 14
    canary_units = [u for u in units if u.startswith("canary:")]
    assert len(canary_units) == len(set(canary_units)) == 14
    assert [u for u in units if not u.startswith("canary:")] == plain.train["unit"]


def test_text_canaries_for_pretraining_and_the_base_model_audit(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tuneforge.data.build import build_text
    from tuneforge.models.loader import load_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"The number {i} comes after {i - 1}." for i in range(1, 13)) + "\n")
    raw = run_config(tmp_path, tiny_model_dir)
    raw.update(stage="pt", name="pt")
    raw["data"].update(datasets=[{"path": str(corpus)}], cutoff_len=48, val_size=4)
    config = save_yaml(tmp_path / "pt.yaml", raw)
    cfg = load_config(config, [])
    tokenizer = load_tokenizer(cfg.model)
    built = build_text(cfg.data, tokenizer)
    rec = CanaryRecord.from_json(built.canaries, "built")
    rows = [tuple(r) for r in built.train["input_ids"]]
    for c in rec.canaries:
        assert rec.sample(c.secret).text == f"code {c.secret}"  # type: ignore[union-attr]
        assert rows.count(tuple(tokenizer(f"code {c.secret}")["input_ids"] + [tokenizer.eos_token_id])) == c.repeats
    assert len(rows) == 8 + 14
    report, out = run_audit(AuditRequest(base=config, batch_size=BATCH, bootstrap=100))
    assert report["checks"] == ["canaries", "mia"] and report["target"]["stage"] == "pt"
    assert report["canaries"]["mode"] == "exact" and len(report["canaries"]["canaries"]) == 8
    assert report["mia"]["members"] == 8 and report["mia"]["nonmembers"] == 4
    assert out == tmp_path / "runs" / "audit-base-pt" and (out / "audit.json").is_file()


def test_the_run_folder_records_its_canaries(canary_run: Path) -> None:
    run = RunDir(canary_run)
    data = json.loads(run.canaries.read_text(encoding="utf-8"))
    rec = CanaryRecord.from_json(data, run.canaries)
    assert data["space"] == 1000 and data["inserted_samples"] == 14
    assert [(c.repeats, c.text) for c in rec.canaries][:1] == [(1, f"code {rec.canaries[0].secret}")]
    stats = json.loads(run.data_stats.read_text(encoding="utf-8"))
    assert stats["canaries"]["inserted_samples"] == 14


@pytest.mark.parametrize(
    ("over", "named"),
    [
        ({"format": "no secret here"}, "data.canaries.format"),
        ({"format": "{secret} and {secret}"}, "data.canaries.format"),
        ({"repeats": [0, 4]}, "data.canaries.repeats"),
        ({"repeats": [4, 4]}, "data.canaries.repeats"),
        ({"digits": 1}, "too few candidate secrets"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_canary_settings_are_refused_at_load(tmp_path: Path, tiny_model_dir: Path, over, named) -> None:
    raw = run_config(tmp_path, tiny_model_dir)
    raw["data"]["canaries"] = {**CANARIES, **over}
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(save_yaml(tmp_path / "bad.yaml", raw), [])


def test_canaries_that_do_not_fit_or_go_into_preference_data_are_refused(tmp_path: Path, chatml_tokenizer) -> None:
    long = {**CANARIES, "prompt": "tell me the secret code now please " * 4}
    with pytest.raises(DataError, match=r"does not fit data\.cutoff_len=64"):
        build_sft(data_config(tmp_path, cutoff_len=64, canaries=long), chatml_tokenizer)
    with pytest.raises(DataError, match=r"preference data .* takes none"):
        build_preference(data_config(tmp_path))


def test_canary_record_read_back_checks_its_content() -> None:
    good = record(3, [("123", 2)]).to_json()
    assert CanaryRecord.from_json(good, "x").inserted[0].secret == "123"
    with pytest.raises(DataError, match="x: not a canary record"):
        CanaryRecord.from_json({"kind": "chat"}, "x")
    with pytest.raises(DataError, match="does not match format"):
        CanaryRecord.from_json({**good, "canaries": [{"secret": "12", "repeats": 1, "text": "code 12"}]}, "x")


# --- membership inference figures -------------------------------------------------------------------------------


def test_auc_and_low_fpr_tpr_on_hand_made_losses() -> None:
    members, nonmembers = [0.1, 0.2, 0.3], [0.25, 0.4, 0.5]
    scores, positive = -np.array(members + nonmembers), [1, 1, 1, 0, 0, 0]
    # member beats non-member when its loss is lower: 3 + 3 + 2 of 9 pairs
    assert auc(scores, positive) == pytest.approx(8 / 9)
    assert tpr_at_fpr(scores, positive, 0.0) == pytest.approx(2 / 3)  # 0.1, 0.2 before any non-member
    assert tpr_at_fpr(scores, positive, 1 / 3) == 1.0
    fpr, tpr = roc_curve(scores, positive)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    # the same number as eval.metrics' Mann-Whitney AUC, ties included
    rng = np.random.default_rng(0)
    tied = rng.integers(0, 5, size=60).astype(float)
    labels = rng.integers(0, 2, size=60)
    assert auc(tied, labels) == pytest.approx(roc_auc(tied, labels))
    assert auc([1.0, 2.0], [0, 1]) == 1.0 and auc([1.0, 2.0], [1, 0]) == 0.0 and auc([1.0, 1.0], [1, 0]) == 0.5


def test_attack_figures_with_stratified_bootstrap_intervals() -> None:
    idx = stratified_indices(3, 5, resamples=50, seed=0)
    assert idx.shape == (50, 8) and (idx[:, :3] < 3).all() and (idx[:, 3:] >= 3).all()
    rng = np.random.default_rng(2)
    separated = attack_figures(rng.normal(1.0, 0.1, 200), rng.normal(2.0, 0.1, 200), resamples=200, seed=0)
    assert separated["auc"]["value"] == 1.0 and separated["tpr_at_fpr_0.01"]["value"] == 1.0
    assert separated["tpr_at_fpr_0.01"]["resolved"] and not separated["tpr_at_fpr_0.001"]["resolved"]
    mixed = attack_figures(rng.normal(1.0, 1.0, 200), rng.normal(1.3, 1.0, 200), resamples=300, seed=0)
    a = mixed["auc"]
    assert 0.5 < a["value"] < 0.8 and a["low"] < a["value"] < a["high"] and a["high"] - a["low"] < 0.2
    assert mixed["members"] == mixed["nonmembers"] == 200
    assert mixed["loss_members_mean"] < mixed["loss_nonmembers_mean"]
    with pytest.raises(AuditError, match="at least 2 members"):
        attack_figures([1.0], [1.0, 2.0], resamples=10, seed=0)


# --- audits of a trained run --------------------------------------------------------------------------------------


def test_overfit_run_exposes_its_inserted_canaries_more_than_the_never_inserted(canary_run: Path) -> None:
    report, out = run_audit(AuditRequest(run=canary_run, checks=("canaries",), batch_size=BATCH))
    c = report["canaries"]
    assert c["mode"] == "exact" and c["candidates_scored"] == 1000
    groups = {g["repeats"]: g for g in c["by_repeats"]}
    never, six = groups[0], groups[6]
    assert six["exposure_min"] > never["exposure_mean"] + 3  # of 9.97 bits at most
    assert six["exposure_mean"] > 7
    assert out == RunDir(canary_run).audit and (out / "exposure.png").stat().st_size > 1000
    # the base model, for reference: the same canaries, not memorised
    config = RunDir(canary_run).config
    base, _ = run_audit(
        AuditRequest(base=config, checks=("canaries",), out=canary_run.parent / "base-audit", batch_size=BATCH)
    )
    assert base["target"]["adapter"] is None and base["target"]["base_config"] == str(config)
    assert [r["secret"] for r in base["canaries"]["canaries"]] == [r["secret"] for r in c["canaries"]]
    base_groups = {g["repeats"]: g for g in base["canaries"]["by_repeats"]}
    assert base_groups[6]["exposure_mean"] < six["exposure_mean"] - 3


def test_audit_cli_end_to_end(canary_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["audit", str(canary_run), "--out", str(out), "--bootstrap", "200", "--batch-size", str(BATCH)]) == 0
    printed = capsys.readouterr().out
    assert "Canary exposure" in printed and "Membership inference" in printed and f"written to {out}" in printed
    report = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert report["checks"] == ["canaries", "mia"]
    mia = report["mia"]
    assert mia["members"] == 5 and mia["nonmembers"] == 3 and mia["nonmember_source"] == "validation split"
    assert 0.0 <= mia["auc"]["low"] <= mia["auc"]["value"] <= mia["auc"]["high"] <= 1.0
    assert len(mia["roc"]["fpr"]) == len(mia["roc"]["tpr"]) >= 2
    assert (out / "roc.png").stat().st_size > 1000 and (out / "audit.md").read_text().startswith("# Audit of run")
    # an existing report is kept unless asked
    assert main(["audit", str(canary_run), "--mia", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["audit", str(canary_run), "--mia", "--out", str(out), "--overwrite", "--bootstrap", "100"]) == 0
    assert json.loads((out / "audit.json").read_text())["checks"] == ["mia"] and not (out / "exposure.png").exists()


def test_membership_rebuilds_the_runs_split_without_canaries(canary_run: Path) -> None:
    from tuneforge.models.loader import load_tokenizer

    cfg = load_config(RunDir(canary_run).config, [])
    tokenizer = load_tokenizer(cfg.model)
    data = membership(cfg, tokenizer, None)
    assert len(data.members) == 5 and len(data.nonmembers) == 3 and data.dropped == 0
    texts = [tokenizer.decode(r.input_ids) for r in data.members + data.nonmembers]
    assert all("plus" in t and "code?" not in t for t in texts)  # the real samples, never a canary
    assert len(set(texts)) == 8


def test_heldout_dataset_replaces_a_missing_validation_split(canary_run: Path, tmp_path: Path) -> None:
    no_val = copy_run(canary_run, tmp_path / "no-val", data={"val_size": 0.0})
    with pytest.raises(AuditError, match=r"no held-out split \(data\.val_size=0\).*--heldout"):
        run_audit(AuditRequest(run=no_val, checks=("mia",)))
    held = write_alpaca(tmp_path / "held.jsonl", 14, start=8)
    report, _ = run_audit(AuditRequest(run=no_val, checks=("mia",), heldout=str(held), bootstrap=100))
    assert report["mia"]["members"] == 8 and report["mia"]["nonmembers"] == 6
    assert report["mia"]["nonmember_source"] == f"held-out dataset {held}"


def test_bad_audit_inputs_are_clear_errors(canary_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["audit", str(tmp_path / "empty")]) == 2
    assert "is not a tuneforge run folder (no config.yaml)" in capsys.readouterr().err
    with pytest.raises(RunFolderError, match="does not exist"):
        run_audit(AuditRequest(run=tmp_path / "nowhere"))
    plain = copy_run(canary_run, tmp_path / "plain", data={"canaries": None})
    (plain / "canaries.json").unlink()
    with pytest.raises(AuditError, match=r"trained without data\.canaries"):
        run_audit(AuditRequest(run=plain, checks=("canaries",)))
    with pytest.raises(AuditError, match=r"a run folder .* or a config"):
        run_audit(AuditRequest())
    with pytest.raises(AuditError, match="--candidates 5"):
        run_audit(AuditRequest(run=canary_run, candidates=5))
    (plain / "canaries.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(AuditError, match=r"canaries\.json:1: not valid JSON"):
        run_audit(AuditRequest(run=plain, checks=("canaries",)))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(AuditError, match=r"holds no audit\.json"):
        run_audit(AuditRequest(run=canary_run, out=busy, overwrite=True))
    assert (busy / "notes.txt").read_text() == "mine"


def copy_run(run: Path, to: Path, data: dict[str, Any]) -> Path:
    """A copy of `run` whose config.yaml says other data settings (as if it had been trained with them)."""
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    raw = yaml.safe_load((to / "config.yaml").read_text(encoding="utf-8"))
    raw["data"].update(data)
    save_yaml(to / "config.yaml", raw)
    return to
