"""Two-step runs per method on the tiny model, run-folder safety, and resume equal to an uninterrupted run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tuneforge.cli import load_config
from tuneforge.runs import RunExistsError
from tuneforge.stages import run_stage

ROOT = Path(__file__).resolve().parents[1]


def write_alpaca(path: Path, n: int = 24) -> Path:
    rows = [
        {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."} for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def make_cfg(tmp_path: Path, model_dir: Path, **sections: Any) -> dict[str, Any]:
    data = write_alpaca(tmp_path / "train.jsonl")
    raw: dict[str, Any] = {
        "name": "t",
        "model": {"path": str(model_dir)},
        "data": {"datasets": [{"path": str(data), "format": "alpaca"}], "cutoff_len": 64},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "logging_steps": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, value in sections.items():
        merge = isinstance(value, dict) and key != "method"
        raw[key] = {**raw.get(key, {}), **value} if merge else value
    return raw


def cfg_file(tmp_path: Path, raw: dict[str, Any]) -> Path:
    import yaml

    p = tmp_path / f"{raw['name']}.yaml"
    p.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return p


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.mark.parametrize(
    "method",
    [
        {"name": "lora", "r": 4, "alpha": 8},
        {"name": "lora", "r": 4, "use_dora": True},
        {"name": "full"},
        {"name": "freeze", "trainable_layers": 1},
    ],
    ids=["lora", "dora", "full", "freeze"],
)
def test_two_step_run_writes_a_complete_run_folder(tmp_path: Path, tiny_model_dir: Path, method) -> None:
    cfg = load_config(cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir, method=method)), [])
    result = run_stage(cfg)
    run = result.run_dir
    assert result.steps == 2
    assert result.train_loss is not None and math.isfinite(result.train_loss)
    assert (run / "config.yaml").is_file() and (run / "plots" / "loss.png").stat().st_size > 1000
    assert len(losses(run)) == 2
    assert 0 < result.trainable_params <= result.total_params
    if method["name"] == "lora":
        weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
        lora_b = [v for k, v in weights.items() if "lora_B" in k]
        assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it moved
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        PeftModel.from_pretrained(base, str(run / "adapter"))
    else:
        from transformers import AutoModelForCausalLM

        trained = AutoModelForCausalLM.from_pretrained(run / "model")
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        changed = [
            n
            for (n, p), (_, q) in zip(trained.named_parameters(), base.named_parameters(), strict=True)
            if not torch.equal(p, q)
        ]
        assert changed
        if method["name"] == "freeze":
            assert all(".layers.1." in n for n in changed), changed


def test_validation_split_is_evaluated(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, data={"val_size": 0.25}, train={"max_steps": 2, "eval_steps": 1})
    result = run_stage(load_config(cfg_file(tmp_path, raw), []))
    assert result.eval_loss is not None and math.isfinite(result.eval_loss)


def test_packing_runs_padding_free(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, data={"packing": True})
    result = run_stage(load_config(cfg_file(tmp_path, raw), []))
    assert result.train_loss is not None and math.isfinite(result.train_loss)


def test_existing_run_is_never_overwritten_unless_told(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir))
    first = run_stage(load_config(path, []))
    marker = first.run_dir / "metrics.jsonl"
    before = marker.read_text()
    with pytest.raises(RunExistsError, match="already exists"):
        run_stage(load_config(path, []))
    assert marker.read_text() == before
    run_stage(load_config(path, ["output.overwrite=true"]))
    assert (first.run_dir / "adapter").is_dir()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    precious = tmp_path / "runs" / "t"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    path = cfg_file(tmp_path, make_cfg(tmp_path, tiny_model_dir))
    with pytest.raises(RunExistsError, match="not a tuneforge run folder"):
        run_stage(load_config(path, ["output.overwrite=true"]))
    assert (precious / "thesis.tex").read_text() == "years of work"


KILLER = """
import os, signal, sys
from transformers import TrainerCallback
from tuneforge.cli import load_config
from tuneforge.stages import run_stage

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the checkpoint

run_stage(load_config(sys.argv[1], []), callbacks=[KillAfterSave()])
"""


def test_resume_after_kill_reproduces_the_uninterrupted_loss_sequence(tmp_path: Path, tiny_model_dir: Path) -> None:
    train = {"max_steps": 8, "save_steps": 3, "batch_size": 2, "logging_steps": 1, "lr": 5e-3}
    ref = make_cfg(tmp_path, tiny_model_dir, name="ref", train=train)
    reference = run_stage(load_config(cfg_file(tmp_path, ref), []))

    crash = make_cfg(tmp_path, tiny_model_dir, name="crash", train=train)
    path = cfg_file(tmp_path, crash)
    script = textwrap.dedent(KILLER.format(kill_at=6))
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run_dir = tmp_path / "runs" / "crash"
    assert (run_dir / "checkpoints" / "checkpoint-6").is_dir()
    assert not (run_dir / "adapter").exists()

    resumed = run_stage(load_config(path, ["train.resume=true"]))
    got, want = losses(resumed.run_dir), losses(reference.run_dir)
    assert [s for s, _ in got] == list(range(1, 9))
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in want], rel=1e-5, abs=1e-6)


def test_resume_from_the_final_checkpoint_trains_no_extra_step(tmp_path: Path, tiny_model_dir: Path) -> None:
    # A run that stopped after its last checkpoint but before saving: resuming must finish it, not train step 3 of 2.
    import shutil

    from safetensors.torch import load_file

    raw = make_cfg(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_steps": 1})
    path = cfg_file(tmp_path, raw)
    first = run_stage(load_config(path, []))
    run_dir = first.run_dir
    want = load_file(str(run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"))
    (run_dir / "result.json").unlink()
    shutil.rmtree(run_dir / "adapter")
    resumed = run_stage(load_config(path, ["train.resume=true"]))
    assert resumed.steps == 2
    assert max(s for s, _ in losses(run_dir)) == 2
    got = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)  # the checkpoint's weights, saved as is


def test_resume_refuses_a_changed_config(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = make_cfg(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_steps": 1})
    path = cfg_file(tmp_path, raw)
    run_stage(load_config(path, []))
    with pytest.raises(RunExistsError, match=r"differs from the saved one at train\.lr"):
        run_stage(load_config(path, ["train.resume=true", "train.lr=0.5"]))


def test_packed_batch_has_the_same_loss_as_the_padded_batch(tiny_model_dir: Path) -> None:
    """Padding-free packing must not let attention cross samples: same loss as padding, to float precision."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from tuneforge.config import DataConfig, DatasetSpec, ModelConfig
    from tuneforge.data.build import build_sft
    from tuneforge.models.loader import load_tokenizer

    tok = load_tokenizer(ModelConfig(path=str(tiny_model_dir)))
    data_file = write_alpaca(tiny_model_dir.parent / "pack.jsonl", n=6)
    data = build_sft(DataConfig(datasets=[DatasetSpec(path=str(data_file), format="alpaca")], cutoff_len=64), tok)
    rows = [data.train[i] for i in range(4)]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    padded = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(rows)
    packed = DataCollatorWithFlattening(return_position_ids=True)(rows)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        loss_padded = model(**padded, use_cache=False).loss
        loss_packed = model(**packed, use_cache=False).loss
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5), (loss_padded, loss_packed)


def test_packing_trains_on_the_same_loss_as_padding(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The stage must not let packed samples see each other (transformers needs use_cache off for that)."""
    first = {}
    for packing in (False, True):
        raw = make_cfg(
            tmp_path,
            tiny_model_dir,
            name=f"pack-{packing}",
            data={"packing": packing},
            train={"max_steps": 1, "group_by_length": False},
        )
        first[packing] = losses(run_stage(load_config(cfg_file(tmp_path, raw), [])).run_dir)[0][1]
    assert first[True] == pytest.approx(first[False], abs=2e-4)
