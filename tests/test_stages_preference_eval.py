"""Held-out preference figures (preference_eval.json) of stages dpo, rm and kto on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from tests.test_sft import make_cfg
from tests.test_stages_dpo import dpo_cfg, write_pairs
from tests.test_stages_rm_kto import write_kto
from tuneforge.config import ConfigError, ModelConfig, load
from tuneforge.data.render import IGNORE_INDEX
from tuneforge.data.schema import DataError
from tuneforge.methods import METHOD_PARAMS
from tuneforge.models.loader import load_tokenizer
from tuneforge.stages import STAGES, run_stage
from tuneforge.stages.preference_eval import FILE, figures, implicit_reward, render_pairs, score


def pair_rows(n: int) -> Dataset:
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                "chosen": [{"role": "assistant", "content": f"{2 * i}"}],
                "rejected": [{"role": "assistant", "content": f"It is {2 * i + 1}, I think."}],
            }
            for i in range(n)
        ]
    )


def with_test_pairs(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    raw["data"]["test_datasets"] = [{"path": str(path), "format": "preference"}]
    return raw


def check_figures(block: dict[str, Any]) -> None:
    assert 0.0 <= block["accuracy"] <= 1.0
    assert all(math.isfinite(v) for v in block.values())
    assert block["margin"] == pytest.approx(block["mean_chosen"] - block["mean_rejected"], abs=1e-3)


def test_answer_logprob_matches_a_hand_computation(tiny_model_dir: Path) -> None:
    """Batched, right-padded scoring equals token-by-token log p(answer token | everything before it)."""
    tokenizer = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    held = render_pairs(tokenizer, pair_rows(3), 64, "test")
    rendered = held.chosen + held.rejected  # different lengths: the batch is padded
    first = rendered[0]
    answer = [t for t, label in zip(first.input_ids, first.labels, strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "0<|im_end|>"  # the answer through its end-of-turn token, nothing else
    got = score(model, rendered, "logprob", batch_size=4, pad_id=tokenizer.pad_token_id)
    for r, value in zip(rendered, got, strict=True):
        hand = 0.0
        with torch.no_grad():
            for t, label in enumerate(r.labels):
                if label == IGNORE_INDEX:
                    continue
                logits = model(torch.tensor([r.input_ids[:t]])).logits[0, -1]
                hand += torch.log_softmax(logits.double(), -1)[label].item()
        assert value == pytest.approx(hand, abs=1e-3)
    assert not model.training


def test_figures_and_implicit_reward_by_hand() -> None:
    before = {"chosen": [-3.0, -2.0], "rejected": [-1.0, -4.0]}
    after = {"chosen": [-1.0, -2.0], "rejected": [-2.0, -3.0]}
    assert figures(before) == {"accuracy": 0.5, "margin": 0.0, "mean_chosen": -2.5, "mean_rejected": -2.5}
    # pair 1: (2) - (-1) = 3; pair 2: 0 - 1 = -1; mean 1 * beta 0.5
    assert implicit_reward(before, after, 0.5) == {"reward_margin": 0.5, "reward_accuracy": 0.5}


def test_dpo_writes_held_out_figures_for_test_datasets(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = with_test_pairs(dpo_cfg(tmp_path, tiny_model_dir), write_pairs(tmp_path / "test_pairs.jsonl", n=5))
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    report = json.loads((result.run_dir / FILE).read_text())
    assert report["source"] == "data.test_datasets" and report["pairs"] == 5 and report["beta"] == 0.1
    check_figures(report["before"])
    check_figures(report["after"])
    assert report["before"]["reward_margin"] == 0.0
    assert math.isfinite(report["after"]["reward_margin"])
    assert report["after"]["mean_chosen"] != report["before"]["mean_chosen"]  # training changed the policy


def test_rm_scores_the_validation_split_with_the_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = dpo_cfg(tmp_path, tiny_model_dir, stage="rm")
    raw["data"]["val_size"] = 4
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    report = json.loads((result.run_dir / FILE).read_text())
    assert report["source"] == "validation split" and report["pairs"] == 4
    assert report["score"] == "reward head score" and "beta" not in report
    check_figures(report["before"])
    check_figures(report["after"])
    assert report["after"] != report["before"]


def test_kto_scores_held_out_pairs(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "data").mkdir()
    path = write_kto(tmp_path / "data" / "kto.jsonl")
    test = write_pairs(tmp_path / "test_pairs.jsonl", n=3)
    data: dict[str, Any] = {
        "datasets": [{"name": "kto_demo"}],
        "dataset_dir": str(path.parent),
        "cutoff_len": 64,
        "test_datasets": [{"path": str(test), "format": "preference"}],
    }
    raw = make_cfg(tmp_path, tiny_model_dir, stage="kto", data=data, kto={"beta": 0.2})
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    report = json.loads((result.run_dir / FILE).read_text())
    assert report["pairs"] == 3 and report["beta"] == 0.2
    check_figures(report["after"])


def test_no_held_out_pairs_no_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = run_stage(load(dpo_cfg(tmp_path, tiny_model_dir, dpo={"loss": "simpo"}), methods=METHOD_PARAMS))
    assert not (result.run_dir / FILE).exists()


def test_test_datasets_only_for_preference_stages(tmp_path: Path, tiny_model_dir: Path) -> None:
    test = write_pairs(tmp_path / "test_pairs.jsonl", n=3)
    raw = make_cfg(tmp_path, tiny_model_dir, data={"test_datasets": [{"path": str(test), "format": "preference"}]})
    with pytest.raises(ConfigError, match=r"data\.test_datasets holds held-out preference pairs.*stage 'sft'"):
        load(raw, methods=METHOD_PARAMS, stages=STAGES)


def test_held_out_pairs_beyond_cutoff_fail_before_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    long = tmp_path / "long.jsonl"
    row = {"prompt": "word " * 80, "chosen": "yes", "rejected": "no"}
    long.write_text(json.dumps(row) + "\n", encoding="utf-8")
    raw = with_test_pairs(dpo_cfg(tmp_path, tiny_model_dir), long)
    with pytest.raises(DataError, match=r"every held-out pair \(data.test_datasets\).*data.cutoff_len=64"):
        run_stage(load(raw, methods=METHOD_PARAMS))
    assert not (tmp_path / "runs" / "t").exists()


@pytest.mark.parametrize(
    ("stage", "method", "dpo", "reason"),
    [
        ("dpo", "adalora", {}, "AdaLoRA trains exactly one adapter"),
        ("kto", "adalora", None, "AdaLoRA trains exactly one adapter"),
        ("dpo", "mpt", {"loss": "orpo"}, "needs task_ids in every batch"),
        ("rm", "mpt", None, "needs task_ids in every batch"),
        ("kto", "mpt", None, "needs task_ids in every batch"),
        ("rm", "qlora", None, "score head in bfloat16"),
    ],
)
def test_method_stage_combinations_that_cannot_work_fail_at_load(
    stage: str, method: str, dpo: dict[str, Any] | None, reason: str
) -> None:
    raw: dict[str, Any] = {"stage": stage, "method": {"name": method}}
    if dpo is not None:
        raw["dpo"] = dpo
    with pytest.raises(ConfigError, match=rf"method '{method}' cannot train stage '{stage}': .*{reason}"):
        load(raw, methods=METHOD_PARAMS)


def test_adalora_trains_reference_free_dpo(tmp_path: Path, tiny_model_dir: Path) -> None:
    """orpo/simpo keep no reference adapter, so AdaLoRA's one-adapter rule does not stop them."""
    raw = dpo_cfg(tmp_path, tiny_model_dir, dpo={"loss": "simpo"}, method={"name": "adalora"})
    result = run_stage(load(raw, methods=METHOD_PARAMS))
    assert result.steps == 2
