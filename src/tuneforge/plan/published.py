"""`python -m tuneforge.plan.published`: published GPU-memory figures next to what `tuneforge plan` predicts for
the same setup, printed as the markdown docs/plan.md holds ("Checked against published figures").

Two sources, each quoted as published:

- the QLoRA paper (Dettmers et al. 2023, arXiv 2305.14314) and its code (artidoro/qlora): a 65B model finetunes on
  one 48 GB GPU, a 33B one on a 24 GB consumer GPU, and the 4-bit LLaMA-7B base takes 5,048 MB; planned with the
  settings of the paper's Guanaco scripts;
- LLaMA-Factory's README table "Hardware Requirement" (method × model size), kept below as its verbatim text and
  parsed from it, planned with LLaMA-Factory's own example settings.

Every figure names the tuneforge preset, method, precision and settings it is planned with, and renders as the
`tuneforge plan` command that reproduces it. GB are read as GiB: a "48 GB" card holds 48 GiB.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tuneforge.plan.hardware import GIB, MIB, gpu
from tuneforge.plan.planner import Plan, Request, make_plan
from tuneforge.plan.shapes import ModelShape, load_shape


@dataclass(frozen=True)
class Settings:
    """One `tuneforge plan` setup: the flags and keys a figure is planned with."""

    model: str  # a preset of plan/shapes.py
    method: dict[str, Any]  # the method section: name and the settings that differ from its defaults
    precision: str
    seq: int
    batch: int
    gpu: str
    grad_accum: int = 1
    checkpointing: bool = False
    optim: str = "adamw_torch"

    def request(self) -> Request:
        from tuneforge.methods.table import method_of

        method = method_of(self.method["name"]).params.model_validate(self.method)
        return Request(
            shape=_shape(self.model),
            method=method,
            seq=self.seq,
            batch=self.batch,
            hardware=gpu(self.gpu),
            precision=self.precision,
            grad_accum=self.grad_accum,
            checkpointing=self.checkpointing,
            optim=self.optim,
        )

    def command(self) -> str:
        """The command line: key=value overrides right after `plan` (argparse takes them there), then the flags."""
        keys = [
            f"method.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.method.items() if k != "name"
        ]
        if self.grad_accum != 1:
            keys.append(f"train.grad_accum={self.grad_accum}")
        if self.checkpointing:
            keys.append("train.gradient_checkpointing=true")
        if self.optim != "adamw_torch":
            keys.append(f"train.optim={self.optim}")
        flags = [
            f"--model {self.model}",
            f"--method {self.method['name']}",
            f"--seq {self.seq}",
            f"--batch {self.batch}",
        ]
        return " ".join(["tuneforge plan", *keys, *flags, f"--precision {self.precision}", f"--gpu {self.gpu}"])


@cache
def _shape(preset: str) -> ModelShape:  # one skeleton per preset for all the figures that use it
    return load_shape(preset)


@dataclass(frozen=True)
class Figure:
    source: str  # a key of SOURCES
    claim: str  # what the source says, in its words (a quote, or their table's row label)
    size: str  # the model size as the source names it
    published_gib: float
    settings: Settings
    component: str | None = None  # None: the step's peak; else one component of the plan ("weights")
    why: str = ""  # why the two differ; {placeholders} are filled from the plan (`details`)
    bits: str = ""  # LLaMA-Factory: their "Bits" column
    printed: str = ""  # the figure as the source prints it, when it is not "N GB"


@dataclass
class Row:
    figure: Figure
    plan: Plan
    predicted: float = field(init=False)  # bytes per device: the peak, or the figure's component

    def __post_init__(self) -> None:
        c = self.figure.component
        self.predicted = self.plan.memory.peak if c is None else self.plan.memory.get(c)

    @property
    def ratio(self) -> float:
        return self.predicted / (self.figure.published_gib * GIB)

    @property
    def per_param(self) -> float:
        return self.plan.memory.peak / self.plan.total


# ------------------------------------------------------------------------------------------------ the sources

QLORA = "qlora"
LLAMA_FACTORY = "llama-factory"
SOURCES: dict[str, str] = {
    QLORA: "Dettmers, Pagnoni, Holtzman, Zettlemoyer 2023, *QLoRA: Efficient Finetuning of Quantized LLMs* "
    "(https://arxiv.org/abs/2305.14314), its code https://github.com/artidoro/qlora (commit 7f4e95a), and the "
    "Hugging Face blog post by its authors (https://huggingface.co/blog/4bit-transformers-bitsandbytes)",
    LLAMA_FACTORY: 'https://github.com/hiyouga/LLaMA-Factory README.md, section "Hardware Requirement" '
    "(commit ff6d4d1 of 2026-08-18)",
}

# What the figures are planned with: scripts/finetune_guanaco_{33b,65b}.sh of artidoro/qlora (`--lora_r 64
# --lora_alpha 16 --lora_modules all --lora_dropout 0.05 --double_quant --quant_type nf4 --bf16 --bits 4
# --gradient_checkpointing --source_max_len 16 --target_max_len 512 --per_device_train_batch_size 1
# --gradient_accumulation_steps 16`) and qlora.py's default `optim='paged_adamw_32bit'`; the paper's appendix
# B.2 states the same LoRA settings (r=64, α=16, all linear layers, dropout 0.05 for 33B and 65B).
GUANACO = {
    "name": "qlora",
    "r": 64,
    "alpha": 16,
    "dropout": 0.05,
    "bits": 4,
    "quant_type": "nf4",
    "double_quant": True,
    "compute_dtype": "bfloat16",
}


def guanaco(model: str, gpu_name: str) -> Settings:
    """A Guanaco run: one sequence of at most 16 + 512 tokens per micro-batch, 16 accumulated."""
    return Settings(model, GUANACO, "bf16", 16 + 512, 1, gpu_name, 16, checkpointing=True, optim="paged_adamw_32bit")


QLORA_BF16_CASTS = (
    "tuneforge counts peft's fp32 adapter and the fp32 embeddings and head prepare_model_for_kbit_training leaves; "
    "qlora.py casts both to bf16, which makes {qlora_py} GiB ({qlora_py_verdict}; bitsandbytes' 32-bit Adam state "
    "stays fp32), and its paged optimizer can move the {optimizer} GiB of Adam state to CPU RAM when memory runs short"
)

QLORA_FIGURES = [
    Figure(
        QLORA,
        '"finetune a 65B parameter model on a single 48GB GPU" (abstract); "from >780GB of GPU memory to <48GB" (§1)',
        "65B",
        48.0,
        guanaco("65b", "a6000"),
        why="Fits with {free} GiB to spare. " + QLORA_BF16_CASTS + ".",
    ),
    Figure(
        QLORA,
        '"33B model finetuning on a single 24GB GPU" (blog); Guanaco 33B "trainable in less than 12 hours on a '
        'single consumer GPU" (paper §1)',
        "33B",
        24.0,
        guanaco("33b", "rtx4090"),
        why="{verdict} as tuneforge trains it: " + QLORA_BF16_CASTS + ".",
    ),
    Figure(
        QLORA,
        '"the 4-bit base model consumes 5,048 MB of memory" (§3, a 7B LLaMA)',
        "7B",
        5048 * MIB / GIB,
        guanaco("7b", "rtx4090"),
        component="weights",
        printed="5,048 MB",
        why="The base weights only. tuneforge: {quantised}B linear weights at 0.516 bytes (NF4 and double-quantised "
        "absmax, as bitsandbytes stores them) = {quantised_gib} GiB, and {kept}B embedding and head weights in fp32 "
        "= {kept_gib} GiB; the paper gives no breakdown of its 5,048 MB, so its {gap} GiB more are unexplained.",
    ),
]

# The table as LLaMA-Factory's README prints it (the source above), parsed by `lf_table`.
LF_README_TABLE = """\
| Method                              | Bits |   7B  |  14B  |  30B  |   70B  |   `x`B  |
| ----------------------------------- | ---- | ----- | ----- | ----- | ------ | ------- |
| Full (`bf16` or `fp16`)             |  32  | 120GB | 240GB | 600GB | 1200GB | `18x`GB |
| Full (`pure_bf16`)                  |  16  |  60GB | 120GB | 300GB |  600GB |  `8x`GB |
| Freeze/LoRA/GaLore/APOLLO/BAdam/OFT |  16  |  16GB |  32GB |  64GB |  160GB |  `2x`GB |
| QLoRA / QOFT                        |   8  |  10GB |  20GB |  40GB |   80GB |   `x`GB |
| QLoRA / QOFT                        |   4  |   6GB |  12GB |  24GB |   48GB | `x/2`GB |
| QLoRA / QOFT                        |   2  |   4GB |   8GB |  16GB |   24GB | `x/4`GB |
"""
# Their sizes are parameter counts; tuneforge plans shapes, so each column is a Llama-family preset of about that
# size (no dense Llama-family 30B exists: LLaMA-33B, 32.5B, is the nearest).
LF_PRESETS = {"7B": "7b", "14B": "14b", "30B": "33b", "70B": "70b"}
X_COLUMN = "`x`B"
# LLaMA-Factory's examples (examples/train_lora/qwen3_lora_sft.yaml, train_qlora/qwen3_lora_sft_otfq.yaml):
# cutoff_len 2048, per_device_train_batch_size 1, gradient_accumulation_steps 8, bf16; its defaults: gradient
# checkpointing on, lora_rank 8 on all linear layers, freeze_trainable_layers 2, galore_rank / apollo_rank 16,
# oft_block_size 32, bitsandbytes NF4 with double quantisation.


def lf_settings(model: str, method: dict[str, Any], precision: str) -> Settings:
    return Settings(model, method, precision, seq=2048, batch=1, gpu="h100", grad_accum=8, checkpointing=True)


# (their row label, their bits) -> the tuneforge plans of that row: (method section, precision, why they differ)
LF_PLANS: dict[tuple[str, str], list[tuple[dict[str, Any], str, str]]] = {
    ("Full (`bf16` or `fp16`)", "32"): [
        (
            {"name": "full"},
            "bf16-mixed",
            "Their 18 B/param: fp32 weights, gradients, Adam moments and a 16-bit copy. tuneforge peaks at the "
            "optimizer step, 20 B/param: torch's foreach AdamW holds a 4-byte sqrt(v) of every parameter "
            "(`adamw_torch_fused` would not), while autocast's 16-bit copies are freed by then.",
        )
    ],
    ("Full (`pure_bf16`)", "16"): [
        (
            {"name": "full"},
            "bf16",
            "Their 8 B/param: bf16 weights, gradients and Adam moments; tuneforge's 10 at the optimizer step is the "
            "foreach sqrt(v) temporary again (2 bytes in bf16).",
        )
    ],
    ("Freeze/LoRA/GaLore/APOLLO/BAdam/OFT", "16"): [
        (
            {"name": "freeze"},
            "bf16",
            "Their 2x counts the bf16 weights; the last 2 layers' bf16 gradients and Adam moments add 6 B per "
            "trained value (LLaMA-Factory upcasts the trained layers to fp32, 14 B beyond the 16-bit weight, so its "
            "own run holds more).",
        ),
        (
            {"name": "lora", "r": 8},
            "bf16",
            "Agree: the bf16 weights are most of it; the fp32 adapter with its gradients and Adam state, "
            "checkpointed activations at 2048 × 1, the logits chunk and the CUDA context add the rest.",
        ),
        (
            {"name": "galore", "rank": 16},
            "bf16",
            "Not what their row says: GaLore projects the optimizer state, not the gradients, and every weight's "
            "bf16 gradient lives through the 8 accumulated micro-batches (LLaMA-Factory's `galore_layerwise` steps "
            "each weight in a gradient hook, and refuses gradient accumulation; tuneforge does not plan that mode).",
        ),
        (
            {"name": "apollo", "rank": 16},
            "bf16",
            "As GaLore: the full-size bf16 gradients stay; only the optimizer state shrinks.",
        ),
        ({"name": "oft"}, "bf16", "Agree: the bf16 weights plus small fp32 rotation blocks and their state."),
    ],
    ("QLoRA / QOFT", "8"): [
        (
            {"name": "qlora", "bits": 8, "r": 8},
            "bf16",
            "Their x: 1 B/param. tuneforge adds LLM.int8's fp32 scale per row and keeps the embeddings and head in "
            "fp32 (4 B per parameter: Qwen2.5-14B's 152k vocabulary makes that 1.6B parameters).",
        ),
    ],
    ("QLoRA / QOFT", "4"): [
        (
            {"name": "qlora", "bits": 4, "r": 8, "compute_dtype": "bfloat16"},
            "bf16",
            "Their x/2: 0.5 B/param. NF4 with double-quantised absmax is 0.516 per linear weight, and the fp32 "
            "embeddings and head weigh most where the vocabulary is large (14B) and least at 70B.",
        ),
    ],
}
LF_NOT_PLANNED = {
    "BAdam": "not a tuneforge method",
    "QOFT": "OFT on a quantised base: not a tuneforge method",
    "QLoRA / QOFT, 2 bits": "tuneforge's `qlora` quantises to 4 or 8 bits with bitsandbytes; LLaMA-Factory's "
    "2-bit bases are HQQ / AQLM / GPTQ models",
    "`x`B": "their rule itself: shown as each row's B/param",
}


def lf_table(text: str = LF_README_TABLE) -> dict[tuple[str, str], dict[str, str]]:
    """(row label, bits) -> {column: cell} of the README table's text, cells as printed ("120GB", "`18x`GB")."""
    lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.strip().splitlines()]
    header, rows = lines[0], lines[2:]
    return {(r[0], r[1]): dict(zip(header[2:], r[2:], strict=True)) for r in rows}


def _gb(cell: str) -> float:
    if not cell.endswith("GB"):
        raise ValueError(f"LLaMA-Factory table cell {cell!r} is not a size in GB")
    return float(cell.removesuffix("GB"))


def rule(cell: str) -> float:
    """Bytes per parameter of a cell of their `x`B column: `18x`GB -> 18, `x`GB -> 1, `x/2`GB -> 0.5."""
    factor, x, divisor = cell.replace("`", "").removesuffix("GB").partition("x")
    if not x:
        raise ValueError(f"LLaMA-Factory `x`B cell {cell!r} is not a multiple of x")
    return float(factor or 1) / float(divisor.removeprefix("/") or 1)


def lf_headroom() -> tuple[int, int, str]:
    """How many of their cells sit more than 10% above their own rule at the column's nominal size, of how many,
    and the largest such excess in words."""
    excess = []
    for (label, bits), cells in lf_table().items():
        per_param = rule(cells[X_COLUMN])
        for size in LF_PRESETS:
            nominal = per_param * float(size.removesuffix("B"))
            excess.append((_gb(cells[size]) / nominal, f"{label}, {bits} bits, {size}: {nominal:g} → {cells[size]}"))
    over = [e for e in excess if e[0] > 1.1]
    return len(over), len(excess), max(excess)[1]


def lf_figures() -> list[Figure]:
    table = lf_table()
    figures = []
    for (label, bits), plans in LF_PLANS.items():
        cells = table[(label, bits)]
        for method, precision, why in plans:
            for size, preset in LF_PRESETS.items():
                settings = lf_settings(preset, method, precision)
                figures.append(Figure(LLAMA_FACTORY, label, size, _gb(cells[size]), settings, why=why, bits=bits))
    return figures


def figures() -> list[Figure]:
    return [*QLORA_FIGURES, *lf_figures()]


def rows() -> list[Row]:
    return [Row(f, make_plan(f.settings.request(), search=False)) for f in figures()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneforge.plan.published", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    from tuneforge.plan.published_report import markdown  # the rendering imports this module's figures

    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
