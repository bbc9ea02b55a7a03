"""`tuneforge bench speed` on the tiny model: the workers' records, the FLOP count, the eval check, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.bench import speed, speed_worker
from tuneforge.cli import build_parser


def spec(tmp_path: Path, model_dir: Path, kind: str, name: str) -> dict:
    s = speed.SpeedSettings(model=str(model_dir), steps=2, heldout=4, cutoff_len=384)
    return {
        "kind": kind,
        "config": speed.run_config(s, name, tmp_path / "runs"),
        "overrides": speed.VARIANTS[name] or [],
        "out": str(tmp_path / name),
    }


def test_hf_and_tuneforge_workers_train_the_same_samples(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peaks = {"fp32_default": 2e10, "fp32": 2e10, "bf16": 1e9}  # timed matmuls are the bench's business, not a test's
    monkeypatch.setattr(speed_worker, "measure_peaks", lambda: peaks)
    hf = speed_worker.train_worker(spec(tmp_path, tiny_model_dir, "hf", "hf"))
    tf = speed_worker.train_worker(spec(tmp_path, tiny_model_dir, "train", "tuneforge"))
    for r in (hf, tf):
        assert r["steps"] == 2 and r["samples"] == 8 and r["train_s"] > 0
        # train_s is recorded to 0.01 s: on a fast machine that rounding alone moves tokens/train_s by > 1%.
        lo, hi = r["tokens"] / (r["train_s"] + 0.005), r["tokens"] / max(r["train_s"] - 0.005, 1e-9)
        assert lo * 0.999 <= r["tokens_per_s"] <= hi * 1.001
        assert r["peak_rss_mb"] > 0 and r["peaks"] == peaks
        assert r["frac_fp32_peak"] == pytest.approx(r["flops_per_s"] / 2e10)
        assert len(r["losses"]) == 2
    assert (hf["tokens"], hf["label_tokens"], hf["useful_flops"]) == (
        tf["tokens"],
        tf["label_tokens"],
        tf["useful_flops"],
    )
    # Same seed, same samples in the same order (packing keeps the random sampler): the same training.
    assert tf["heldout_loss"] == pytest.approx(hf["heldout_loss"], rel=1e-3)


def test_useful_flops_formula() -> None:
    dims = {"hidden": 2, "vocab": 10, "layers": 3, "frozen_linear": 100, "lora": 7}
    counts = {"tokens": 5, "label_tokens": 2, "sum_t2": 13}
    assert speed_worker.useful_flops(dims, counts) == 5 * (400 + 42) + 2 * 4 * 2 * 10 + 6 * 3 * 2 * 13
    rows = {"input_ids": [[1, 2, 3], [4, 5]], "labels": [[-100, 2, 3], [-100, -100]]}
    assert speed_worker.data_counts(rows) == {"samples": 2, "tokens": 5, "label_tokens": 2, "sum_t2": 13}


def test_naive_loop_agrees_with_the_batched_scorer(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.eval.lm import LM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ctx = [list(tok(t, add_special_tokens=False)["input_ids"]) for t in ("Question: a b c\nAnswer:", "Question: d")]
    conts = [list(tok(t, add_special_tokens=False)["input_ids"]) for t in (" yes", " no way", " the fox")]
    pairs = [(c, x) for c in ctx for x in conts]
    batched = [s.logprob for s in LM(model, tok, batch_size=4, progress=False).loglikelihoods(pairs)]
    naive = [speed_worker.naive_loglikelihood(model, c, x) for c, x in pairs]
    assert naive == pytest.approx(batched, abs=1e-4)


def fake_run(tag: str, tokens_per_s: float, loss: float, rss: float) -> dict:
    return {
        "variant": tag.rsplit("-", 1)[0],
        "tag": tag,
        "tokens_per_s": tokens_per_s,
        "s_per_step": 1.0,
        "peak_rss_mb": rss,
        "heldout_loss": loss,
        "flops_per_s": 1e10,
        "frac_fp32_peak": 0.5,
        "frac_bf16_peak": 0.25,
        "peaks": {"fp32_default": 2e10, "bf16": 4e10},
    }


def test_summary_pairs_alternating_runs_and_the_ablation(tmp_path: Path) -> None:
    runs = [
        fake_run("hf-1", 100, 2.0, 1000),
        fake_run("tuneforge-1", 300, 2.02, 900),
        fake_run("hf-2", 120, 2.0, 1000),
        fake_run("tuneforge-2", 300, 2.0, 950),
        fake_run("tf_plain-1", 110, 2.0, 1000),
        fake_run("+packing-1", 220, 2.0, 1000),
        {"variant": "+onednn_fp32", "tag": "+onednn_fp32-1", "error": "RuntimeError: boom"},
    ]
    sm = speed.summary(runs, {"speedup": 4.0})
    assert [p["tokens_per_s_ratio"] for p in sm["pairs"]] == [3.0, 2.5]
    assert sm["pairs"][0]["loss_rel_diff"] == pytest.approx(0.01)
    assert sm["mean"]["tokens_per_s_ratio"] == 2.75
    assert sm["ablation"] == {"tf_plain": 1.0, "+packing": 2.0}
    settings = speed.SpeedSettings()
    report = speed._write(runs, None, settings, tmp_path)
    md = (tmp_path / "speed.md").read_text()
    assert "| tuneforge-1 | 300 |" in md and "failed: RuntimeError: boom" in md and "2.50x" in md
    assert json.loads((tmp_path / "speed.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))


def test_bench_speed_refuses_a_used_folder_and_unknown_variants(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        speed.bench_speed(speed.SpeedSettings(), tmp_path / "used")
    with pytest.raises(ValueError, match="unknown ablation"):
        speed.bench_speed(speed.SpeedSettings(ablation=["+turbo"]), tmp_path / "new")


def test_cli_parses_bench_speed() -> None:
    args = build_parser().parse_args(["bench", "speed", "train.threads=2", "--steps", "3", "--repeats", "1"])
    assert args.what == "speed" and args.overrides == ["train.threads=2"] and args.steps == 3
    assert args.cutoff_len is None and args.ablation is None  # filled with the speed defaults by speed_cli


def test_bench_speed_reads_its_settings_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneforge.cli import main

    seen: list[speed.SpeedSettings] = []

    def fake_bench(s: speed.SpeedSettings, out: Path) -> dict:
        seen.append(s)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.md").write_text("# speed\n")
        return {"runs": []}

    monkeypatch.setattr(speed, "bench_speed", fake_bench)
    words = ["bench", "speed", "train.max_steps=3", "bench.repeats=1", "bench.ablation=+packing", "train.threads=2"]
    assert main([*words, f"bench.out={tmp_path}", "--cutoff-len", "256"]) == 0
    s = seen[-1]
    assert (s.steps, s.cutoff_len, s.heldout, s.repeats, list(s.ablation), s.lr) == (3, 256, 16, 1, ["+packing"], 2e-4)
    assert "--cutoff-len is now data.cutoff_len=256" in capsys.readouterr().err
    cfg = speed.run_config(s, "tuneforge-1", tmp_path / "runs")
    assert cfg["data"]["mix_size"] == 3 * 4 + 16 and cfg["train"]["epochs"] == 1 and cfg["train"]["threads"] == 2
    assert cfg["method"] == speed.LORA
    # defaults where nothing is set: 12 steps, cutoff 512; the ablation names exist
    assert main(["bench", "speed", f"bench.out={tmp_path}"]) == 0
    assert (seen[-1].steps, seen[-1].cutoff_len, tuple(seen[-1].ablation)) == (12, 512, speed.DEFAULT_ABLATION)
    assert set(speed.DEFAULT_ABLATION) <= set(speed.VARIANTS)
    # the benchmark's own LoRA is refused as a setting, and so is an unknown key
    assert main(["bench", "speed", "method.r=16"]) == 2
    assert "sets method.r itself" in capsys.readouterr().err
    assert main(["bench", "speed", "bench.repeat=1"]) == 2
    assert "did you mean 'repeats'" in capsys.readouterr().err
