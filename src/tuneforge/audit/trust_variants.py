"""The variants of a trust check (audit/trust.py): what each is, how its weights are built (bitsandbytes at load,
GGUF through llama.cpp's converter and gguf-py's requantiser) and how each is loaded for evaluation."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tuneforge.config import ModelConfig, RunConfig
from tuneforge.errors import TuneforgeError
from tuneforge.runs import model_config_of_run

log = logging.getLogger("tuneforge.audit")


class TrustError(TuneforgeError, ValueError):
    """A trust check that cannot run; the message names the variant, task or folder at fault."""


@dataclass(frozen=True)
class Variant:
    name: str
    kind: Literal["reference", "bnb", "gguf"]
    about: str
    bits: int | None = None  # bnb: 8 or 4
    gguf_type: str | None = None


_LEGACY = "requantised from the converter's F32 file with gguf-py's port of ggml's reference quantiser"
VARIANTS: dict[str, Variant] = {
    "fp32": Variant(name="fp32", kind="reference", about="float32 weights: the reference"),
    "bnb8": Variant(name="bnb8", kind="bnb", bits=8, about="bitsandbytes LLM.int8 (8-bit, outlier threshold 6)"),
    "bnb4": Variant(
        name="bnb4", kind="bnb", bits=4, about="bitsandbytes 4-bit NF4, double quantisation, float32 compute"
    ),
    "gguf-q8_0": Variant(
        name="gguf-q8_0", kind="gguf", gguf_type="q8_0", about="GGUF Q8_0 written by llama.cpp's convert_hf_to_gguf"
    ),
    "gguf-q5_1": Variant(name="gguf-q5_1", kind="gguf", gguf_type="q5_1", about=f"GGUF Q5_1, {_LEGACY}"),
    "gguf-q5_0": Variant(name="gguf-q5_0", kind="gguf", gguf_type="q5_0", about=f"GGUF Q5_0, {_LEGACY}"),
    "gguf-q4_1": Variant(name="gguf-q4_1", kind="gguf", gguf_type="q4_1", about=f"GGUF Q4_1, {_LEGACY}"),
    "gguf-q4_0": Variant(name="gguf-q4_0", kind="gguf", gguf_type="q4_0", about=f"GGUF Q4_0, {_LEGACY}"),
}
DEFAULT_VARIANTS = ("fp32", "bnb8", "bnb4", "gguf-q8_0", "gguf-q4_0")


def check_variants(names: Sequence[str]) -> list[Variant]:
    """The variants named, fp32 first (the reference of every comparison); each one buildable here."""
    chosen: list[Variant] = []
    for name in ["fp32", *[n for n in names if n != "fp32"]]:
        key = name.strip().lower()
        if key not in VARIANTS:
            hint = ""
            if key.startswith("gguf-"):
                hint = (
                    f" {key[5:].upper()} is not written here: K-quants and i-quants need llama.cpp's llama-quantize "
                    "(C++, not installed), and gguf-py can write only Q8_0 and the legacy Q4_0/Q4_1/Q5_0/Q5_1 types."
                )
            raise TrustError(f"variant {name!r} is not one of {', '.join(VARIANTS)}.{hint}")
        if VARIANTS[key] in chosen:
            raise TrustError(f"variant {name!r} is named twice")
        chosen.append(VARIANTS[key])
    if any(v.kind == "bnb" for v in chosen):
        import importlib.util

        from tuneforge.methods.qlora import INSTALL_HINT

        if importlib.util.find_spec("bitsandbytes") is None:
            bad = ", ".join(v.name for v in chosen if v.kind == "bnb")
            raise TrustError(f"variants {bad}: {INSTALL_HINT} (or leave them out: variants without bnb8/bnb4)")
    if any(v.kind == "gguf" for v in chosen):
        from tuneforge.export.run import ExportError, gguf_converter

        try:
            gguf_converter()
        except ExportError as e:
            bad = ", ".join(v.name for v in chosen if v.kind == "gguf")
            raise TrustError(f"variants {bad}: {e}") from None
    return chosen


# --- GGUF requantisation -------------------------------------------------------------------------------------


def requantize_gguf(src: Path, out: Path, qtype: str) -> Path:
    """Write `src` (an F32/F16 GGUF) with its matrices in Q4_0, Q4_1, Q5_0 or Q5_1, as llama-quantize would.

    Fills a gap: llama-quantize is a C++ tool (not installed) and convert_hf_to_gguf.py writes only F32/F16/Q8_0.
    gguf-py ships numpy ports of ggml's reference quantisers (its tests check them bit for bit against libggml),
    and this applies llama-quantize's tensor rules for the legacy types: 1-D tensors (norms) stay F32; the output
    matrix (the token embedding when the two are tied) gets more bits, Q8_0 here where llama.cpp takes Q6_K if the
    row width is a multiple of 256 (gguf-py cannot write Q6_K), else Q8_0 as well; a matrix whose rows are not a
    multiple of 32 stays as it is.
    """
    import gguf

    types = {"q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1"}
    if qtype not in types:
        raise TrustError(f"GGUF type {qtype!r} cannot be requantised here; supported: {', '.join(types)}")
    target = gguf.GGMLQuantizationType[types[qtype]]
    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(str(out), arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType[f"MOSTLY_{types[qtype]}"])
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    names = {t.name for t in reader.tensors}
    output = "output.weight" if "output.weight" in names else "token_embd.weight"
    for t in reader.tensors:
        data = np.asarray(t.data)
        plain = t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        if not plain or data.ndim < 2 or data.shape[-1] % 32:
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
            continue
        kind = gguf.GGMLQuantizationType.Q8_0 if t.name == output else target
        writer.add_tensor(t.name, gguf.quants.quantize(data.astype(np.float32), kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


# --- building and loading variants ---------------------------------------------------------------------------


@dataclass
class Source:
    """What the variants are made of: an HF folder of float32 weights and the tokenizer every variant uses."""

    label: str
    folder: Path
    tokenizer: Any
    model_cfg: ModelConfig


def source_of(cfg: RunConfig, run: Path | None, work: Path) -> Source:
    """The base model's folder; for a run, its trained output merged into the base in float32 (work/fp32)."""
    from tuneforge.models.loader import load_tokenizer, resolve_model_path

    if run is None:
        model_cfg = cfg.model.model_copy(update={"dtype": "float32"})
        return Source(
            f"base model {cfg.model.path}", resolve_model_path(model_cfg), load_tokenizer(model_cfg), model_cfg
        )
    from tuneforge.export.run import save_hf
    from tuneforge.inference import LocalEngine
    from tuneforge.methods import merge

    base_cfg, output = model_config_of_run(run)
    base_cfg = base_cfg.model_copy(update={"dtype": "float32"})
    engine = LocalEngine(base_cfg, output)
    model = engine.model if (output / "config.json").is_file() else merge(engine.model)  # full runs: as saved
    folder = work / "fp32"
    save_hf(model, engine.tokenizer, folder)
    tokenizer = engine.tokenizer
    del model, engine
    gc.collect()
    return Source(f"run {run}", folder, tokenizer, base_cfg.model_copy(update={"path": str(folder), "tokenizer": None}))


def check_run(run: Path) -> None:
    """A run whose adapter cannot be folded into the weights has nothing to quantise: refuse before loading."""
    from tuneforge.methods import method_of, saved_params

    _, output = model_config_of_run(run)
    params = saved_params(output)
    if params is not None and method_of(params).output == "adapter" and not method_of(params).mergeable:
        raise TrustError(
            f"run {run}: method {params.name} is not mergeable, so its weights cannot be quantised with the base; "
            "the trust check compares quantised copies of one set of weights"
        )


def gguf_file(source: Source, variant: Variant, work: Path) -> tuple[Path, float]:
    """The variant's GGUF file, written into `work`, and the seconds it took."""
    from tuneforge.export.run import ExportError, gguf_converter, to_gguf

    start = time.perf_counter()
    qtype = variant.gguf_type or "q8_0"
    out = work / f"model-{qtype}.gguf"
    log.info("trust check: writing %s", out.name)
    try:
        if qtype == "q8_0":
            to_gguf(gguf_converter(), source.folder, "q8_0", out, quiet=True)
        else:
            f32 = work / "model-f32.gguf"
            if not f32.is_file():
                to_gguf(gguf_converter(), source.folder, "f32", f32, quiet=True)
            requantize_gguf(f32, out, qtype)
    except ExportError as e:
        raise TrustError(f"variant {variant.name}: {e}") from None
    return out, time.perf_counter() - start


def load_variant(source: Source, variant: Variant, gguf: Path | None = None) -> tuple[Any, int, str]:
    """The variant's model, its weights' size in bytes and where they came from (`gguf`: its file)."""
    from tuneforge.models.loader import load_model

    if variant.kind == "gguf":
        from transformers import AutoModelForCausalLM

        if gguf is None:
            raise TrustError(f"variant {variant.name}: no GGUF file given")
        # transformers dequantises every tensor of the file: the quantised weights exactly, held in float32
        read = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        return read.eval(), gguf.stat().st_size, str(gguf)
    kwargs: dict[str, Any] = {}
    if variant.kind == "bnb":
        from tuneforge.methods.qlora import QloraParams, qlora_load_kwargs, release_checkpoint_pages

        kwargs = qlora_load_kwargs(QloraParams(bits=variant.bits or 4))  # exactly as method qlora loads a base
    model = load_model(source.model_cfg, source.tokenizer, **kwargs)
    if variant.kind == "bnb":
        release_checkpoint_pages(model)
    return model.eval(), int(model.get_memory_footprint()), str(source.folder)


GGUF_NOTE = (
    "GGUF variants are evaluated through transformers' GGUF reader (weights dequantised, float32 compute); "
    "llama.cpp's own kernels, which also round activations to 8 bits, were not run (llama-cpp-python is not "
    "installed for this check)."
)
