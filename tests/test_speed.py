"""Speed levers keep the loss: capped packed rows, the label-only chunked loss, the oneDNN route check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

from tests.test_sft import cfg_file, losses, make_cfg, write_alpaca
from tuneforge.cli import load_config
from tuneforge.config import DataConfig, DatasetSpec, ModelConfig
from tuneforge.data.build import build_sft
from tuneforge.data.collate import PackedRowsCollator
from tuneforge.models.loader import load_tokenizer
from tuneforge.models.loss import label_only_loss, label_only_parts
from tuneforge.stages import run_stage
from tuneforge.stages.sft import packing_mismatch
from tuneforge.utils import cpu


def rows_and_tokenizer(model_dir: Path, n: int = 6) -> tuple[list[dict], object]:
    tok = load_tokenizer(ModelConfig(path=str(model_dir)))
    data_file = write_alpaca(model_dir.parent / f"speed-{n}.jsonl", n=n)
    data = build_sft(DataConfig(datasets=[DatasetSpec(path=str(data_file), format="alpaca")], cutoff_len=64), tok)
    return [data.train[i] for i in range(n)], tok


def lora_model(model_dir: Path, targets: str | list[str] = "all-linear") -> torch.nn.Module:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    return model.eval()


def test_packed_rows_are_capped_and_keep_every_label(tiny_model_dir: Path) -> None:
    rows, tok = rows_and_tokenizer(tiny_model_dir)
    longest = max(len(r["input_ids"]) for r in rows)
    batch = PackedRowsCollator(max_tokens=2 * longest, pad_token_id=tok.pad_token_id)(rows)
    assert batch["input_ids"].shape[1] <= 2 * longest
    assert batch["input_ids"].numel() <= len(rows) * longest  # never more computed tokens than padding
    assert "attention_mask" not in batch
    # Every label but each sample's first (masked at the sample boundary, never trained on) is kept.
    assert int((batch["labels"] != -100).sum()) == sum(sum(x != -100 for x in r["labels"][1:]) for r in rows)
    # A sample over the cap gets its own row; the rows are the cheapest of the candidate widths.
    assert PackedRowsCollator(10, 0).rows([7, 3, 8, 2, 12]) == [[4], [2, 1], [0, 3]]
    # One 470-token row plus a 67-token one padded to 470 would compute more than padding (4 x 228): rows of the
    # longest sample's width hold the short ones side by side instead.
    assert PackedRowsCollator(512, 0).rows([228, 135, 67, 107]) == [[0], [1, 2], [3]]
    assert PackedRowsCollator(512, 0).rows([7, 3, 8, 2, 12]) == [[4, 2, 0, 1, 3]]
    with pytest.raises(ValueError, match="max_tokens"):
        PackedRowsCollator(0, 0)


@pytest.mark.parametrize("cap", [1.0, 2.5, 100.0])
def test_packed_rows_give_the_padded_loss(tiny_model_dir: Path, cap: float) -> None:
    rows, tok = rows_and_tokenizer(tiny_model_dir)
    cap = int(cap * max(len(r["input_ids"]) for r in rows))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    padded = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(rows)
    packed = PackedRowsCollator(max_tokens=cap, pad_token_id=tok.pad_token_id)(rows)
    with torch.no_grad():
        want = model(**padded, use_cache=False).loss
        got = model(**packed, use_cache=False).loss
    assert torch.allclose(want, got, atol=1e-5), (want, got)


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj", "lm_head"]], ids=["all-linear", "lm_head"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_label_only_loss_and_gradients_equal_the_plain_ones(tiny_model_dir: Path, targets, packed: bool) -> None:
    rows, tok = rows_and_tokenizer(tiny_model_dir)
    collate = PackedRowsCollator(100, tok.pad_token_id) if packed else DataCollatorForSeq2Seq(tok, padding=True)
    batch = dict(collate(rows))
    model = lora_model(tiny_model_dir, targets)
    parts = label_only_parts(model)
    assert not isinstance(parts, str), parts
    trained = [p for p in model.parameters() if p.requires_grad]

    def run(fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = fn()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trained]

    plain, plain_grads = run(lambda: model(**batch, use_cache=False).loss)
    fast, fast_grads = run(lambda: label_only_loss(*parts, batch, chunk=7))  # several chunks, a ragged last one
    assert torch.allclose(plain, fast, atol=1e-5), (plain, fast)
    for a, b in zip(plain_grads, fast_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    # Normalised by a given count (the Trainer's label count over an accumulated batch), like the model's loss.
    with torch.no_grad():
        want = model(**batch, use_cache=False, num_items_in_batch=100).loss
        got = label_only_loss(*parts, batch, num_items_in_batch=torch.tensor(100))
    assert torch.allclose(want, got, atol=1e-6)


def test_label_only_loss_trains_the_head_of_full_fine_tuning(tiny_llama3_dir: Path) -> None:
    rows, tok = rows_and_tokenizer(tiny_llama3_dir, n=4)
    batch = dict(DataCollatorForSeq2Seq(tok, padding=True)(rows))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama3_dir).eval()  # untied lm_head, everything trained
    parts = label_only_parts(model)
    assert not isinstance(parts, str)
    model(**batch, use_cache=False).loss.backward()
    want = model.lm_head.weight.grad.clone()
    model.zero_grad()
    label_only_loss(*parts, batch, chunk=5).backward()
    assert torch.allclose(model.lm_head.weight.grad, want, atol=1e-6)


def test_label_only_refuses_what_it_cannot_compute(tiny_model_dir: Path) -> None:
    from peft import PromptTuningConfig

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    assert "virtual tokens" in str(label_only_parts(prompt))
    capped = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    capped.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in str(label_only_parts(capped))


def test_onednn_route_is_checked_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    knob = cpu._onednn_knob()
    if knob is None:
        pytest.skip("no oneDNN fp32 setting in this torch build")
    before = knob.fp32_precision
    try:
        assert not cpu.use_onednn_fp32(False).used and knob.fp32_precision == "none"
        route = cpu.use_onednn_fp32(True)
        assert route.used == (route.error is not None and route.error <= cpu.FP32_TOLERANCE)
        monkeypatch.setattr(cpu, "_relative_error", lambda size=256: 4e-3)  # what a real bf16 matmul shows
        route = cpu.use_onednn_fp32(True)
        assert not route.used and "deviates" in route.reason and knob.fp32_precision == "none"
    finally:
        knob.fp32_precision = before


def test_all_levers_train_on_the_plain_loss(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Same first loss with every lever on (packed capped rows, label-only loss, oneDNN) as with all off."""
    caplog.set_level("INFO", logger="tuneforge.train")
    first = {}
    for on in (False, True):
        raw = make_cfg(
            tmp_path,
            tiny_model_dir,
            name=f"levers-{on}",
            data={"packing": on, "packing_row_tokens": 100},
            train={"max_steps": 2, "group_by_length": False, "label_only_logits": on, "onednn_fp32": on},
        )
        first[on] = losses(run_stage(load_config(cfg_file(tmp_path, raw), [])).run_dir)
    assert "label-only chunked loss: on" in caplog.text  # the fast path ran, it did not fall back
    assert [s for s, _ in first[True]] == [s for s, _ in first[False]] == [1, 2]
    for (_, a), (_, b) in zip(first[True], first[False], strict=True):
        assert a == pytest.approx(b, abs=2e-4)


@pytest.mark.parametrize(("method", "packed"), [({"name": "lora", "r": 4}, True), ({"name": "prompt_tuning"}, False)])
def test_packing_is_checked_on_the_model(
    tmp_path: Path, tiny_model_dir: Path, method: dict, packed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """data.packing is checked per run; a method whose packed rows would change the loss trains padded, saying why."""
    raw = make_cfg(tmp_path, tiny_model_dir, method=method, data={"packing": True})
    cfg = load_config(cfg_file(tmp_path, raw), [])
    assert cfg.data.packing is True
    result = run_stage(cfg)
    decision = json.loads((result.run_dir / "cpu.json").read_text(encoding="utf-8"))["packing"]
    if packed:
        assert decision == "used"
        assert "data.packing: not applied" not in caplog.text
    else:  # prompt tuning: virtual tokens in front of the row, which packed samples would not see
        assert decision.startswith("prompt_tuning is prompt learning")
        assert "data.packing: not applied" in caplog.text
    assert len(losses(result.run_dir)) == 2


def test_packing_check_catches_a_model_that_lets_samples_attend_to_each_other(tiny_model_dir: Path) -> None:
    rows, tokenizer = rows_and_tokenizer(tiny_model_dir)
    model = lora_model(tiny_model_dir).train()
    assert packing_mismatch(model, tokenizer, rows) is None
    assert model.training  # restored after the check's eval-mode forwards

    class IgnoresPositions(torch.nn.Module):  # custom modelling code that drops position ids
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, position_ids=None, **kwargs):
            return self.inner(**kwargs)

    why = packing_mismatch(IgnoresPositions(model), tokenizer, rows)
    assert why is not None and "differs from padded" in why
    assert packing_mismatch(model, tokenizer, rows[:1]) is None  # one sample: nothing to cross
