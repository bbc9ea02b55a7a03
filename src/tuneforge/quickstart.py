"""`tuneforge quickstart`: fine-tune the embedded model on shipped data and show, before vs after, that it learned.

Probes use held-out data only: identity questions worded differently from training, and dates never trained on.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import RunConfig
from tuneforge.data.schema import Message
from tuneforge.data.synthetic.generate import HERE as SHIPPED_DIR
from tuneforge.inference import GenerationParams, LocalEngine
from tuneforge.stages import run_stage

log = logging.getLogger("tuneforge.quickstart")

QUICKSTART_CONFIG = Path(__file__).resolve().parent / "examples" / "quickstart.yaml"


@dataclass
class Probe:
    identity_hits: int
    identity_total: int
    mentions_smollm: int
    date_exact: int
    date_total: int
    examples: list[dict[str, str]]

    @property
    def identity_acc(self) -> float:
        return self.identity_hits / max(self.identity_total, 1)

    @property
    def date_acc(self) -> float:
        return self.date_exact / max(self.date_total, 1)


def _load(name: str) -> list[dict[str, str]]:
    return json.loads((SHIPPED_DIR / name).read_text(encoding="utf-8"))


def probe(engine: LocalEngine, name: str, batch: int = 8, label: str = "model") -> Probe:
    ident = _load("identity_test.json")
    dates = _load("iso_dates_test.json")
    ask = [[Message("user", r["instruction"])] for r in ident]
    answers = engine.generate_many(ask, GenerationParams(max_new_tokens=40), batch, f"{label}: identity probe")
    ask_d = [[Message("user", r["instruction"])] for r in dates]
    answers_d = engine.generate_many(ask_d, GenerationParams(max_new_tokens=14), batch, f"{label}: date probe")
    exact = sum(a.strip() == r["output"] for a, r in zip(answers_d, dates, strict=True))
    examples = [{"q": ident[i]["instruction"], "a": answers[i]} for i in range(2)]
    examples += [{"q": dates[i]["instruction"], "a": answers_d[i], "gold": dates[i]["output"]} for i in range(2)]
    return Probe(
        identity_hits=sum(bool(re.search(rf"\b{re.escape(name)}\b", a, re.I)) for a in answers),
        identity_total=len(ident),
        mentions_smollm=sum("smollm" in a.lower() for a in answers),
        date_exact=exact,
        date_total=len(dates),
        examples=examples,
    )


def report(cfg: RunConfig, before: Probe, after: Probe, train: dict[str, Any], seconds: float) -> str:
    name = cfg.data.variables.get("name", "")
    rows = [
        ("held-out identity questions answered as " + repr(name), before.identity_acc, after.identity_acc),
        ("held-out dates converted exactly (YYYY-MM-DD)", before.date_acc, after.date_acc),
    ]
    lines = [
        f"## tuneforge quickstart: {cfg.method.name} on {cfg.model.path} ({seconds:.0f} s in all)",
        "",
        "| probe (held-out) | base | tuned | change |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {b:.0%} | {a:.0%} | {a - b:+.0%} |" for label, b, a in rows]
    lines += [
        f"| answers mentioning SmolLM | {before.mentions_smollm}/{before.identity_total} "
        f"| {after.mentions_smollm}/{after.identity_total} | |",
        "",
        f"training: {train.get('steps')} steps, final loss {train.get('train_loss')}, "
        f"{train.get('tokens_per_s')} tokens/s, {train.get('trainable_params'):,} trainable of "
        f"{train.get('total_params'):,} parameters",
        "",
        "| question | base answer | tuned answer |",
        "|---|---|---|",
    ]
    for b, a in zip(before.examples, after.examples, strict=True):
        lines.append(f"| {_cell(b['q'])} | {_cell(b['a'])} | {_cell(a['a'])} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:120]


def run(cfg: RunConfig) -> dict[str, Any]:
    started = time.perf_counter()
    name = cfg.data.variables.get("name", "")
    log.info("probing the base model on held-out questions (before training)")
    base = LocalEngine(cfg.model)
    before = probe(base, name, label="base")
    del base
    result = run_stage(cfg)
    log.info("probing the tuned model on the same held-out questions")
    tuned = LocalEngine(cfg.model, result.output_dir)
    after = probe(tuned, name, label="tuned")
    seconds = time.perf_counter() - started
    text = report(cfg, before, after, result.summary(), seconds)
    eval_dir = result.run_dir / "eval"
    eval_dir.mkdir(exist_ok=True)
    (eval_dir / "quickstart.md").write_text(text, encoding="utf-8")
    summary = {
        "seconds": round(seconds, 1),
        "before": before.__dict__ | {"identity_acc": before.identity_acc, "date_acc": before.date_acc},
        "after": after.__dict__ | {"identity_acc": after.identity_acc, "date_acc": after.date_acc},
        "train": result.summary(),
    }
    (eval_dir / "quickstart.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(text)
    return summary
