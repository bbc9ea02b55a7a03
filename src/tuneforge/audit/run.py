"""`tuneforge audit`: what a trained run leaks about its training data, measured on the run itself.

A request names a run folder (its base model with its adapter, its config, its canaries.json) or, for reference,
a config whose base model is audited the same way (`--base CONFIG`: the canaries it would insert, its data split).
The checks are the AUDITS table, run in its order: `canaries` (canary.py: exposure of the inserted secrets and of
the never-inserted ones) and `mia` (mia.py: the loss attack on training against held-out samples). Without a
choice, every check that applies runs. The report goes to <run>/eval/audit/ (or --out): audit.json, audit.md and
the PNGs; an existing report is never replaced unless asked.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.audit import AuditError
from tuneforge.audit.canary import exposures, model_scorer
from tuneforge.audit.mia import audit_membership, membership
from tuneforge.audit.report import EXPOSURE_PNG, ROC_PNG, markdown, plot_exposure, plot_roc
from tuneforge.config import ModelConfig, RunConfig
from tuneforge.data.canaries import CanaryRecord, draw
from tuneforge.runs import RunDir, RunFolderError, model_config_of_run
from tuneforge.stages import STAGES, load_config

log = logging.getLogger("tuneforge.audit")
REPORT = "audit.json"
SUMMARY = "audit.md"


@dataclass(frozen=True, kw_only=True)
class AuditRequest:
    run: Path | None = None  # a run folder
    base: Path | None = None  # or a config: its base model, for reference
    checks: tuple[str, ...] = ()  # names in AUDITS; empty: every check that applies
    n: int | None = 500  # membership inference: samples per side at most (None: all)
    candidates: int = 1000  # canaries: candidate secrets scored (every one when the space is no larger)
    heldout: str | None = None  # membership inference: non-members from this dataset instead of the val split
    out: Path | None = None
    overwrite: bool = False
    batch_size: int = 8
    bootstrap: int = 1000
    seed: int = 0


@dataclass
class AuditTarget:
    """What is audited: the config (the run's, or the --base one), the model, and the run folder if any."""

    label: str
    cfg: RunConfig
    model: ModelConfig
    adapter: Path | None
    run: RunDir | None
    _engine: Any = field(default=None, repr=False)

    def engine(self) -> Any:
        """The model with its adapter (merged where it can be: the same logits, faster), loaded once."""
        if self._engine is None:
            from tuneforge.inference import LocalEngine

            log.info("loading %s%s", self.model.path, f" + {self.adapter}" if self.adapter else "")
            self._engine = LocalEngine(self.model, self.adapter, merge_adapter=True)
        return self._engine

    def canaries(self) -> CanaryRecord | None:
        """The run's canaries.json; for a base model, the canaries its config's data.canaries would insert."""
        if self.run is None:
            spec, kind = self.cfg.data.canaries, STAGES[self.cfg.stage].data
            if spec is None or (kind != "chat" and kind != "text"):  # the kinds data.canaries goes into
                return None
            return draw(spec, kind)
        if not self.run.canaries.is_file():
            return None
        path = self.run.canaries
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise AuditError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        return CanaryRecord.from_json(data, path)


def audit_canaries(target: AuditTarget, request: AuditRequest) -> dict[str, Any]:
    record = target.canaries()
    if record is None:
        if target.run is None:
            raise AuditError(
                f"--canaries: config {request.base} has no data.canaries for stage {target.cfg.stage!r} "
                f"(canaries go into chat data, stage sft, and text, stage pt)"
            )
        if target.cfg.data.canaries is not None:
            raise AuditError(
                f"--canaries: run {target.run.root} sets data.canaries but has no {target.run.canaries.name}, the "
                "record of what its data build inserted (did the training stop before its data was built?)"
            )
        raise AuditError(
            f"--canaries: run {target.run.root} was trained without data.canaries (it has no "
            f"{target.run.canaries.name}): there are no inserted secrets to rank; train with data.canaries "
            "(docs/privacy.md)"
        )
    from tuneforge.eval.lm import LM

    engine = target.engine()
    lm = LM(engine.model, engine.tokenizer, request.batch_size, progress=False)
    return exposures(record, model_scorer(lm, record, target.cfg.data), request.candidates, request.seed)


def audit_mia(target: AuditTarget, request: AuditRequest) -> dict[str, Any]:
    engine = target.engine()
    data = membership(target.cfg, engine.tokenizer, request.heldout)
    tok = engine.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return audit_membership(engine.model, pad, data, request.n, request.batch_size, request.bootstrap, request.seed)


# check name -> the function that runs it (and the CLI flag --<name>); the report keeps this order
AUDITS: dict[str, Callable[[AuditTarget, AuditRequest], dict[str, Any]]] = {
    "canaries": audit_canaries,
    "mia": audit_mia,
}
# the checks run when a request names none (canaries only where the target has some)
DEFAULT_CHECKS = ("canaries", "mia")


def open_target(request: AuditRequest) -> AuditTarget:
    if (request.run is None) == (request.base is None):
        raise AuditError("tuneforge audit needs a run folder (tuneforge audit RUN) or a config (--base CONFIG), one")
    if request.base is not None:
        cfg = load_config(request.base)
        return AuditTarget(f"base model of {request.base}", cfg, cfg.model, None, None)
    run = RunDir(Path(request.run or ""))
    if not run.root.is_dir():
        raise RunFolderError(f"run folder {run.root} does not exist")
    if not run.is_run():
        raise RunFolderError(f"{run.root} is not a tuneforge run folder (no {run.config.name})")
    model_cfg, output = model_config_of_run(run.root)
    return AuditTarget(f"run {run.root}", load_config(run.config), model_cfg, output, run)


def checks_of(request: AuditRequest, target: AuditTarget) -> list[str]:
    unknown = [c for c in request.checks if c not in AUDITS]
    if unknown:
        raise AuditError(f"unknown audit {', '.join(unknown)}; known: {', '.join(AUDITS)}")
    if request.checks:
        return [c for c in AUDITS if c in request.checks]
    return [c for c in DEFAULT_CHECKS if c != "canaries" or target.canaries() is not None]


def output_folder(request: AuditRequest, target: AuditTarget) -> Path:
    """--out, else <run>/eval/audit (a base model: <output.dir>/audit-base-<name>); refused if it holds anything,
    unless --overwrite and it is an earlier audit's folder."""
    if request.out is not None:
        out = request.out
    elif target.run is not None:
        out = target.run.audit
    else:
        out = Path(target.cfg.output.dir) / f"audit-base-{target.cfg.name}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not request.overwrite:
            raise AuditError(f"{out} already exists and is not empty; choose another --out, or replace it: --overwrite")
        if not (out / REPORT).is_file():
            raise AuditError(f"{out} holds no {REPORT}: it is not an audit report, --overwrite will not delete it")
        shutil.rmtree(out)
    return out


def check_request(request: AuditRequest) -> None:
    for name, value, least in (
        ("--n", request.n, 2),
        ("--candidates", request.candidates, 10),
        ("--batch-size", request.batch_size, 1),
        ("--bootstrap", request.bootstrap, 100),
    ):
        if value is not None and value < least:
            raise AuditError(f"{name} {value}: must be at least {least}")


def run_audit(request: AuditRequest) -> tuple[dict[str, Any], Path]:
    """Run the request's checks; write audit.json, audit.md and the plots; return the report and its folder."""
    check_request(request)
    target = open_target(request)
    checks = checks_of(request, target)
    out = output_folder(request, target)  # before anything slow: a refused folder fails now
    report: dict[str, Any] = {
        "target": {
            "label": target.label,
            "run": str(target.run.root) if target.run else None,
            "base_config": str(request.base) if request.base else None,
            "stage": target.cfg.stage,
            "model": target.model.path,
            "adapter": str(target.adapter) if target.adapter else None,
        },
        "checks": checks,
        "seconds": {},
    }
    for check in checks:
        started = time.perf_counter()
        log.info("audit %s: %s", check, target.label)
        report[check] = AUDITS[check](target, request)
        report["seconds"][check] = round(time.perf_counter() - started, 1)
    write_report(report, out)
    return report, out


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT).write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / SUMMARY).write_text(markdown(report), encoding="utf-8")
    title = report["target"]["label"]
    if "mia" in report:
        plot_roc(report["mia"], out / ROC_PNG, f"membership inference: {title}")
    if "canaries" in report:
        plot_exposure(report["canaries"], out / EXPOSURE_PNG, f"canary exposure: {title}")


__all__ = [
    "AUDITS",
    "DEFAULT_CHECKS",
    "AuditRequest",
    "AuditTarget",
    "checks_of",
    "open_target",
    "output_folder",
    "run_audit",
]
