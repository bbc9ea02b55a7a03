"""GGUF exports of a LoRA run on the real embedded model (marked slow; CI runs them).

- merged f16 GGUF through llama.cpp's convert_hf_to_gguf.py (fetched by .ci/run), reloaded through transformers;
- with llama-cpp-python installed (`tuneforge[llamacpp]`, a ≈12 min source build, not in CI): the merged GGUF and
  the LoRA-only GGUF adapter on the embedded base GGUF run in llama.cpp itself, log-probs against the source.

The adapter is made large on purpose (random lora_B) so that an export that dropped or mis-mapped it would show:
the base alone is far from base + adapter, and the checks require the export to be close to base + adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tuneforge.cli import load_config
from tuneforge.export import gguf_lora, llamacpp
from tuneforge.export.logprob_check import kl, next_token_logprobs, verify_prompts
from tuneforge.export.run import export_run
from tuneforge.inference import LocalEngine
from tuneforge.models import embedded
from tuneforge.quickstart import QUICKSTART_CONFIG
from tuneforge.stages import run_stage

pytestmark = pytest.mark.slow

needs_llama_cpp = pytest.mark.skipif(
    not llamacpp.available(), reason=f"llama-cpp-python is not installed: {llamacpp.INSTALL_HINT}"
)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if gguf_lora.hf_converter_script() is None:
        pytest.skip(
            "llama.cpp's converters are not fetched (python -m tuneforge.export.gguf_lora --fetch; .ci/run does)"
        )
    out = tmp_path_factory.mktemp("runs")
    overrides = [f"output.dir={out}", "train.max_steps=1", "train.save_steps=0", "data.mix_size=8"]
    overrides += ["data.cutoff_len=64", "method.r=8", "method.alpha=16"]
    result = run_stage(load_config(QUICKSTART_CONFIG, overrides))
    weights = load_file(str(result.output_dir / "adapter_model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    for key, value in weights.items():  # a trained-looking, clearly visible adapter
        if ".lora_B." in key:
            weights[key] = torch.randn(value.shape, generator=gen) * 0.03
    save_file(weights, str(result.output_dir / "adapter_model.safetensors"))
    return result.run_dir


def test_merged_gguf_export_matches_base_plus_adapter(lora_run: Path) -> None:
    result = export_run(lora_run, fmt="gguf", gguf_type="f16")
    assert result.gguf == lora_run / "merged" / "model-f16.gguf" and result.gguf.stat().st_size > 200e6
    assert result.max_abs_diff < 1e-3 and result.top1_agreement == 1.0  # the merged HF folder
    assert all(r["top1_match"] for r in result.gguf_rows)
    assert max(r["kl"] for r in result.gguf_rows) < 1e-2
    assert (lora_run / "merged" / "Modelfile").is_file()
    text = (lora_run / "merged" / "verify.md").read_text(encoding="utf-8")
    assert "model-f16.gguf" in text and "llama.cpp" in text
    if llamacpp.available():
        assert len(result.llama_rows) == len(result.rows)
        assert all(r["top1_match"] and r["same_tokens"] for r in result.llama_rows)
        assert max(r["kl"] for r in result.llama_rows) < 1e-2
    else:
        assert "not installed" in result.llama_note


@needs_llama_cpp
def test_lora_gguf_adapter_runs_in_llama_cpp_like_the_peft_adapter(lora_run: Path) -> None:
    result = export_run(lora_run, fmt="gguf-lora", gguf_type="f16")
    # the check: an f16 GGUF of the HF base + the adapter file in llama.cpp vs base + PEFT adapter
    assert "adapter-f16.gguf" in result.llama_note and "base-f16.gguf" in result.llama_note
    assert all(r["top1_match"] and r["same_tokens"] for r in result.llama_rows)
    kl_export = max(r["kl"] for r in result.llama_rows)
    assert kl_export < 1e-3
    # the adapter matters: the base alone is much further from base + adapter than llama.cpp's run of it
    source = LocalEngine(load_config(QUICKSTART_CONFIG, []).model, lora_run / "adapter")
    prompts = verify_prompts(source.tokenizer)
    with_adapter = next_token_logprobs(source.model, prompts)
    with source.model.disable_adapter():
        base = next_token_logprobs(source.model, prompts)
    kl_base = max(kl(a, b) for a, b in zip(with_adapter, base, strict=True))
    assert kl_base > 10 * kl_export, (kl_export, kl_base)
    # the Modelfile's base (the shipped 4-bit GGUF) + adapter: no further from the source than that file alone
    # is from the HF base (llama.cpp runs 4-bit weights with 8-bit activations)
    (note_with, with_lora), (note_alone, alone) = result.llama_more
    assert embedded.gguf_path().name in note_with and "adapter-f16.gguf" in note_with
    assert "without the adapter" in note_alone
    kl_with = sum(r["kl"] for r in with_lora) / len(with_lora)
    kl_alone = sum(r["kl"] for r in alone) / len(alone)
    assert kl_with < 3 * kl_alone + 1e-3, (kl_with, kl_alone)
    text = (lora_run / "gguf-lora" / "verify.md").read_text(encoding="utf-8")
    assert text.count("in llama.cpp (llama-cpp-python") == 3
