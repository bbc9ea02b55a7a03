"""The rendering of `python -m tuneforge.plan.published`: the markdown docs/plan.md holds ("Checked against published
figures"), from the planned rows of tuneforge.plan.published."""

from __future__ import annotations

from tuneforge.plan.hardware import GIB
from tuneforge.plan.published import (
    LF_NOT_PLANNED,
    LF_PRESETS,
    LF_README_TABLE,
    LLAMA_FACTORY,
    QLORA,
    SOURCES,
    X_COLUMN,
    Row,
    _shape,
    lf_headroom,
    lf_table,
    rows,
    rule,
)


def details(row: Row) -> dict[str, str]:
    """The numbers a figure's `why` refers to, read off its plan."""
    plan, mem = row.plan, row.plan.memory
    sk = plan.setup.shape.skeleton
    a = plan.setup.adaptation
    quantised = sum(lin.in_features * lin.out_features for lin in sk.layer_linears())
    kept = [p.numel for p in {p.tensor: p for p in sk.params}.values() if p.module in ("model.embed_tokens", "lm_head")]
    # qlora.py: LoRA layers and embed_tokens / lm_head to bf16 (half of their fp32 bytes); 32-bit Adam state stays
    casts = (mem.get("adapter") + mem.get("gradients")) / 2 + sum(kept) * 2 if a.quant_bits else 0.0
    free = row.plan.request.hardware.memory - mem.peak
    return {
        "free": f"{free / GIB:.1f}",
        "verdict": "Fits" if free >= 0 else f"Does not fit by {-free / GIB:.1f} GiB",
        "qlora_py": f"{(mem.peak - casts) / GIB:.1f}",
        "qlora_py_verdict": "fits" if mem.peak - casts <= row.plan.request.hardware.memory else "still over",
        "gap": f"{(row.figure.published_gib * GIB - row.predicted) / GIB:.2f}",
        "optimizer": f"{mem.get('optimizer') / GIB:.1f}",
        "quantised": f"{quantised / 1e9:.2f}",
        "quantised_gib": f"{(mem.get('weights') - sum(kept) * 4) / GIB:.2f}",
        "kept": f"{sum(kept) / 1e9:.2f}",
        "kept_gib": f"{sum(kept) * 4 / GIB:.2f}",
    }


def _gib(b: float) -> str:
    return f"{b / GIB:,.1f}" if b >= 10 * GIB else f"{b / GIB:,.2f}"


def _model(preset: str) -> str:
    return f"`{preset}` ({_shape(preset).skeleton.total() / 1e9:.2f}B)"


def qlora_section(rs: list[Row]) -> list[str]:
    lines = [
        "### QLoRA (Dettmers et al. 2023)",
        "",
        f"Source: {SOURCES[QLORA]}. Planned with the paper's Guanaco settings (`scripts/finetune_guanaco_65b.sh`, "
        "`_33b.sh`; LoRA as in its appendix B.2): LoRA r=64, α=16, dropout 0.05 on all linear layers of a 4-bit NF4 "
        "base with double quantisation, bf16 compute, gradient checkpointing, `paged_adamw_32bit` (qlora.py's "
        "default), one sequence per micro-batch of at most 16 + 512 tokens (`source_max_len` + `target_max_len`; "
        "counted at that length), 16 accumulated. LLaMA-7B/33B/65B are the presets `7b` (Llama-2-7B: the same "
        "shapes), `33b` and `65b`.",
        "",
        "| they say | model | GPU | published | tuneforge | tuneforge / published | why they differ |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rs:
        f, s = r.figure, r.figure.settings
        what = "" if f.component is None else f" ({f.component})"
        lines.append(
            f"| {f.claim} | {_model(s.model)} | `{s.gpu}` | {f.printed or f'{f.published_gib:g} GB'} "
            f"| {_gib(r.predicted)} GiB{what} "
            f"| {r.ratio:.2f} | {f.why.format(**details(r))} |"
        )
    lines += ["", "```bash", *dict.fromkeys(r.figure.settings.command() for r in rs), "```"]
    return lines


def lf_section(rs: list[Row]) -> list[str]:
    lines = [
        '### LLaMA-Factory: "Hardware Requirement"',
        "",
        f"Source: {SOURCES[LLAMA_FACTORY]}, marked *estimated*, as it reads:",
        "",
        "```text",
        *LF_README_TABLE.splitlines(),
        "```",
        "",
        "Their figures are a rule of thumb: bytes per parameter times the parameter count (the `x`B column), "
        "weights and training state only; activations depend on the sequence length and batch, which the table "
        "does not state. Planned here with LLaMA-Factory's own example settings (`examples/train_lora/"
        "qwen3_lora_sft.yaml`, `train_qlora/qwen3_lora_sft_otfq.yaml`): `cutoff_len` 2048, one sequence per "
        "device, 8 accumulated, gradient checkpointing (its default), LoRA r=8 on all linear layers, 2 trained "
        "layers for freeze, rank 16 for GaLore / APOLLO, NF4 with double quantisation, AdamW, one device (their "
        "figures are totals, not per GPU of a sharded run), tuneforge's label-only loss. Columns: "
        + ", ".join(f"{size} = {_model(p)}" for size, p in LF_PRESETS.items())
        + ". Cells: published GB → tuneforge GiB (tuneforge / published).",
        "",
        "| their row | bits | tuneforge | "
        + " | ".join(LF_PRESETS)
        + " | their B/param | tuneforge's | why they differ |",
        "|---|---|---|" + "---|" * len(LF_PRESETS) + "---:|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rs:
        s = r.figure.settings
        groups.setdefault((r.figure.claim, r.figure.bits, f"`{s.method['name']}` {s.precision}"), []).append(r)
    table = lf_table()
    for (label, bits, plan), group in groups.items():
        cells = [f"{r.figure.published_gib:g} → {_gib(r.predicted)} ({r.ratio:.3f})" for r in group]
        theirs = f"{rule(table[(label, bits)][X_COLUMN]):g}"
        ours = f"{group[0].per_param:.2f} – {group[-1].per_param:.2f}"
        lines.append(f"| {label} | {bits} | {plan} | {' | '.join(cells)} | {theirs} | {ours} | {group[0].figure.why} |")
    near = [r for r in rs if 0.85 <= r.ratio <= 1.15]
    over, cells_n, largest = lf_headroom()
    lora = next(r for r in rs if r.figure.size == "7B" and r.figure.settings.method["name"] == "lora")
    acts = lora.plan.memory.get("activations") + lora.plan.memory.get("loss / logits")
    lines += [
        "",
        f"At 2048 × 1 with checkpointing the activations and the loss's logits chunk are {_gib(acts)} GiB of the 7B "
        f"LoRA plan's {_gib(lora.predicted)} GiB: at these settings the cells are mostly weights and training state, "
        "as their rule assumes; without checkpointing, or at a larger batch, activations grow with seq × batch.",
        f"{len(near)} of the {len(rs)} cells are within ±15%. Their B/param is the `x`B column; tuneforge's is the "
        f"planned peak over the parameter count, at {next(iter(LF_PRESETS))} – {list(LF_PRESETS)[-1]}. Their cells "
        f"are not quite their rule: {over} of {cells_n} sit more than 10% above it at the column's nominal size "
        f"(most: {largest}), headroom the table does not explain.",
        "Not planned: " + "; ".join(f"{k} ({v})" for k, v in LF_NOT_PLANNED.items()) + ".",
        "",
        "The 7B plans (the other columns change `--model`):",
        "",
        "```bash",
        *dict.fromkeys(r.figure.settings.command() for r in rs if r.figure.size == "7B"),
        "```",
    ]
    return lines


def markdown(rs: list[Row] | None = None) -> str:
    rs = rows() if rs is None else rs
    lines = [
        "Generated by `python -m tuneforge.plan.published` from the figures as their sources print them and the "
        "settings each is planned with (the commands below reproduce every number). GB are read as GiB (a "
        '"48 GB" card holds 48 GiB); tuneforge\'s figure is the peak per device of a training step from the '
        "second step on, CUDA context included. MB are read as MiB.",
        "",
        *qlora_section([r for r in rs if r.figure.source == QLORA]),
        "",
        *lf_section([r for r in rs if r.figure.source == LLAMA_FACTORY]),
    ]
    return "\n".join(lines) + "\n"
