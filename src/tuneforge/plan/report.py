"""A plan as a readable table (component, bytes per device, what it is) with the verdict, or as JSON."""

from __future__ import annotations

from typing import Any

from tuneforge.plan.hardware import GIB
from tuneforge.plan.planner import Plan


def human(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def duration(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _utilisation(hw: Any) -> str:
    if hw.backward_utilisation == hw.utilisation:
        return f"{hw.utilisation:.0%}"
    return f"{hw.utilisation:.0%} forward / {hw.backward_utilisation:.0%} backward"


def text(plan: Plan) -> str:
    r, s, m, t, hw = plan.request, plan.setup, plan.memory, plan.timing, plan.request.hardware
    pct = 100 * plan.trainable / plan.total if plan.total else 0.0
    lines = [
        f"model      {r.shape.name}: {r.shape.model_type}, {plan.total:,} parameters, {r.shape.layers} layers, "
        f"hidden {r.shape.hidden}",
        f"method     {r.method.name}: {plan.trainable:,} trainable ({pct:.3f}%)",
        f"setup      seq {r.seq} × batch {r.batch} (grad_accum {r.grad_accum}), {r.precision}, {r.optim}, "
        f"{r.attention} attention, gradient checkpointing {'on' if r.checkpointing else 'off'}"
        + (f", {r.strategy} over {s.devices}" if r.strategy != "single" else ""),
        f"hardware   {hw.count} × {hw.name}: {human(hw.memory)} each, "
        f"{hw.peak(s.precision.act) / 1e12:.3g} TFLOP/s peak ({hw.source}), utilisation {_utilisation(hw)}",
        "",
        f"| {'component':<16} | {'per device':>12} | note |",
        f"|{'-' * 18}|{'-' * 14}:|------|",
    ]
    for c in m.components:
        if c.bytes or c.name in ("weights", "activations", "gradients", "optimizer"):
            lines.append(f"| {c.name:<16} | {human(c.bytes):>12} | {c.note} |")
    lines.append(f"| {'peak':<16} | {human(m.peak):>12} | at the {m.moment} |")
    if m.cpu_offload:
        lines.append(f"| {'offloaded (CPU)':<16} | {human(m.cpu_offload):>12} | distributed.offload: in host memory |")
    lines.append("")
    for c in m.serving:
        lines.append(f"serving    {c.name}: {human(c.bytes)} ({c.note})")
    lines.append("")
    verdict = "FITS" if plan.fits else "DOES NOT FIT"
    margin = hw.memory - m.peak
    lines.append(
        f"verdict    {verdict}: peak {human(m.peak)} of {human(hw.memory)} per device "
        f"({'free' if margin >= 0 else 'short by'} {human(abs(margin))})"
    )
    if not plan.fits:
        if plan.fix is None:
            lines.append("fix        none of the changes tried fits (docs/plan.md lists them)")
        else:
            lines.append(f"fix        {' + '.join(plan.fix.changes)}")
            lines.append(f"           → peak {human(plan.fix.peak)}, {duration(plan.fix.step_s)} per step")
    lines.append("")
    lines.append(
        f"time       {t.flops_per_step / 1e12:,.3f} TFLOP per step → {duration(t.step_s)} per optimizer step "
        f"(compute {duration(t.compute_s)}, memory-bound {duration(t.memory_s)}), {t.tokens_per_s:,.0f} tokens/s"
    )
    if t.epoch_s is not None:
        lines.append(
            f"epoch      {r.samples:,} samples × {r.epochs:g} epoch(s) = {t.steps_per_epoch:,} steps → "
            f"{duration(t.epoch_s)} (every sample counted as {r.seq} tokens: an upper bound)"
        )
    else:
        lines.append("epoch      give --samples N (or a config with data.datasets) for the time per epoch")
    lines += [f"note       {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"


def as_dict(plan: Plan) -> dict[str, Any]:
    r, m, t, hw = plan.request, plan.memory, plan.timing, plan.request.hardware
    return {
        "model": {"name": r.shape.name, "model_type": r.shape.model_type, "parameters": plan.total},
        "method": {**r.method.model_dump(mode="json"), "trainable": plan.trainable},
        "setup": {
            "seq": r.seq,
            "batch": r.batch,
            "grad_accum": r.grad_accum,
            "precision": r.precision,
            "optim": r.optim,
            "attention": r.attention,
            "gradient_checkpointing": r.checkpointing,
            "label_only_logits": r.label_only,
            "strategy": r.strategy,
            "offload": r.offload,
        },
        "hardware": {
            "kind": hw.kind,
            "name": hw.name,
            "count": hw.count,
            "memory_bytes": hw.memory,
            "peak_flops": hw.flops,
            "bandwidth_bytes_per_s": hw.bandwidth,
            "utilisation": hw.utilisation,
            "backward_utilisation": hw.backward_utilisation,
            "source": hw.source,
        },
        "memory": {c.name: {"bytes": c.bytes, "note": c.note} for c in m.components},
        "peak_bytes": m.peak,
        "peak_moment": m.moment,
        "cpu_offload_bytes": m.cpu_offload,
        "serving": {c.name: {"bytes": c.bytes, "note": c.note} for c in m.serving},
        "fits": plan.fits,
        "fix": None
        if plan.fix is None
        else {"changes": plan.fix.changes, "peak_bytes": plan.fix.peak, "step_s": plan.fix.step_s},
        "time": {
            "flops_per_step": t.flops_per_step,
            "step_s": t.step_s,
            "compute_s": t.compute_s,
            "memory_s": t.memory_s,
            "tokens_per_s": t.tokens_per_s,
            "samples": r.samples,
            "steps_per_epoch": t.steps_per_epoch,
            "epoch_s": t.epoch_s,
        },
        "notes": plan.notes,
    }
