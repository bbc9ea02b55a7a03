"""The run folder contract shared by every workflow: this module is the only one that knows its file names.

runs/<name>/
  config.yaml      the resolved configuration (every default filled in)
  metrics.jsonl    one JSON object per logged step / evaluation
  data_stats.json  samples read / used / skipped per dataset, token counts
  result.json      steps, final losses, tokens/s, trainable parameters
  cpu.json         the CPU kind and the fast-path decisions of this run
  completions.jsonl  sampled answers and their rewards (stage grpo)
  deepspeed.json   the DeepSpeed config a run with distributed.strategy=deepspeed used
  canaries.json    the canaries data.canaries inserted into the training split (and the never-inserted ones)
  checkpoints/     Trainer checkpoints (checkpoint-<step>/), for resume
  adapter/         a PEFT adapter folder (parameter-efficient methods)
  model/           a full HF model folder (full / freeze)
  eval/ plots/ merged/   evaluation reports, PNG plots, merged exports
  eval/audit/      `tuneforge audit`'s report (audit.json, audit.md, PNGs)
  eval/forgetting/ `tuneforge forgetting`'s report (forgetting.json/.md/.png; general/ and target/ eval reports)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import ModelConfig, RunConfig
from tuneforge.config.diff import config_diff
from tuneforge.config.sections import TOOL_FORMATS
from tuneforge.errors import TuneforgeError


class RunExistsError(TuneforgeError, FileExistsError):
    pass


class RunFolderError(TuneforgeError, ValueError):
    """A folder given as a run is not one, or has no trained output yet."""


@dataclass(frozen=True)
class RunDir:
    root: Path
    # False in the other processes of a multi-process run: rank 0 is the folder's one writer, the others read it
    # (their write_json / append_metrics do nothing), so no file is written twice at once.
    writes: bool = True

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def data_stats(self) -> Path:
        return self.root / "data_stats.json"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def cpu(self) -> Path:
        return self.root / "cpu.json"

    @property
    def completions(self) -> Path:
        """Sampled answers with their rewards (RL stages), one JSON object per line."""
        return self.root / "completions.jsonl"

    @property
    def deepspeed(self) -> Path:
        return self.root / "deepspeed.json"

    @property
    def canaries(self) -> Path:
        """The secrets data.canaries inserted (text, secret, repeats) and the never-inserted references."""
        return self.root / "canaries.json"

    @property
    def audit(self) -> Path:
        """`tuneforge audit`'s default report folder."""
        return self.eval / "audit"

    @property
    def forgetting(self) -> Path:
        """`tuneforge forgetting`'s default report folder; its general/ and target/ hold the eval reports it ran."""
        return self.eval / "forgetting"

    def is_run(self) -> bool:
        return self.config.is_file()

    def eval_reports(self) -> list[Path]:
        """The report.json of each `tuneforge eval` report in eval/ (a training config's own lands in eval/ itself,
        `--run` reports in eval/<config name>/); the forgetting report's own eval reports are not among them."""
        found = [self.eval / "report.json", *sorted(self.eval.glob("*/report.json"))]
        return [p for p in found if p.is_file() and p.parent != self.forgetting]

    def write_json(self, path: Path, data: Any) -> None:
        """One of the run's JSON files (data_stats, result, cpu ...), indented for a person to read."""
        if not self.writes:
            return
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")

    def last_checkpoint(self) -> Path | None:
        found = [p for p in self.checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def trained_output(self) -> Path | None:
        for p in (self.adapter, self.model):
            if p.is_dir():
                return p
        return None

    def model_section(self) -> ModelConfig:
        """The `model:` section the run was trained with (its base model), from the saved config.yaml."""
        import yaml

        if not self.config.is_file():
            raise RunFolderError(f"{self.root} is not a tuneforge run folder (no config.yaml)")
        raw = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
        return ModelConfig.model_validate(raw.get("model", {}))

    def tool_format(self) -> str:
        """The data.tool_format the run trained with, for serve / chat / eval ("auto" where it recorded nothing).

        data_stats.json holds the resolved name (the data build writes it), config.yaml the setting; a mixed
        resolution ("native tools, hermes calls") is what `auto` finds again on the same template.
        """
        import yaml

        if self.data_stats.is_file():
            recorded = json.loads(self.data_stats.read_text(encoding="utf-8")).get("tool_format")
            if recorded in ("native", "hermes"):
                return str(recorded)
        if self.config.is_file():
            data = (yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}).get("data") or {}
            if data.get("tool_format") in TOOL_FORMATS:
                return str(data["tool_format"])
        return "auto"

    def append_metrics(self, record: dict[str, Any]) -> None:
        if not self.writes:
            return
        with self.metrics.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text(encoding="utf-8").splitlines() if line]


def adapter_run(value: str | Path) -> RunDir | None:
    """The run that `model.adapter` names: the run folder itself, or the run whose adapter/ folder it is (None:
    a folder outside any run, e.g. a downloaded adapter)."""
    path = Path(value).expanduser()
    if RunDir(path).is_run():
        return RunDir(path)
    parent = RunDir(path.parent)
    if parent.is_run() and path.resolve() == parent.adapter.resolve():
        return parent
    return None


def base_section(run: RunDir, _seen: frozenset[Path] = frozenset()) -> ModelConfig:
    """The `model:` section that loads the base under the run's trained output.

    A run without model.adapter, or one that folded it in (model.merge_adapter: the base is model.path with
    that adapter merged, which `tuneforge.inference.load_base` rebuilds), is its own section. A run that
    trained an earlier run's adapter further (model.adapter without merge) sits on that run's base, found in
    that run's folder, recursively: a chain of continued runs keeps the folders it came from.
    """
    own = run.model_section()
    if own.adapter is None or own.merge_adapter:
        return own
    if not Path(own.adapter).expanduser().is_dir():
        raise RunFolderError(
            f"run {run.root} trained further the adapter of model.adapter={own.adapter!r}, which no longer exists: "
            "the base under this run is found there; restore that folder (or export this run while it is there)"
        )
    parent = adapter_run(own.adapter)
    if parent is None:  # an adapter folder outside any run, trained on model.path
        return own.model_copy(update={"adapter": None})
    key = parent.root.resolve()
    if key in _seen:
        raise RunFolderError(f"run {run.root}: model.adapter={own.adapter!r} leads back to a run of its own chain")
    under = base_section(parent, _seen | {key})
    return own.model_copy(
        update={"adapter": under.adapter, "merge_adapter": under.merge_adapter, "tokenizer": under.tokenizer}
    )


def model_config_of_run(run_dir: Path) -> tuple[ModelConfig, Path]:
    """The base model section of a finished run (`base_section`) and its trained output (adapter/ or model/)."""
    run = RunDir(Path(run_dir))
    model_cfg = base_section(run)
    output = run.trained_output()
    if output is None:
        raise RunFolderError(f"run {run.root} has no trained output yet (neither adapter/ nor model/): did it finish?")
    return model_cfg, output


def check_run_available(cfg: RunConfig) -> RunDir:
    """Raise now, before anything slow, if the run folder cannot be used as the config asks."""
    run = RunDir(cfg.run_dir)
    if run.root.exists() and any(run.root.iterdir()):
        if cfg.train.resume:
            if run.last_checkpoint() is None:
                raise RunExistsError(
                    f"train.resume=true but {run.checkpoints} holds no checkpoint to resume from "
                    "(set train.save_steps to write checkpoints during training)"
                )
            _check_same_config(run, cfg)
        elif not cfg.output.overwrite:
            raise RunExistsError(
                f"run folder {run.root} already exists; choose another `name`, resume it with "
                "train.resume=true, or replace it with output.overwrite=true"
            )
        elif not run.config.exists():
            # output.overwrite deletes the folder: only ever delete something that is a tuneforge run.
            raise RunExistsError(
                f"{run.root} exists and is not a tuneforge run folder (no config.yaml); "
                "output.overwrite=true will not delete it"
            )
    elif cfg.train.resume:
        raise RunExistsError(f"train.resume=true but run folder {run.root} does not exist")
    return run


def open_run(cfg: RunConfig) -> RunDir:
    """Create (or, with resume, reopen) the run folder; never overwrite one unless `output.overwrite` says so."""
    run = check_run_available(cfg)
    if run.root.exists() and any(run.root.iterdir()):
        if cfg.train.resume:
            return run
        shutil.rmtree(run.root)  # output.overwrite=true, checked above
    for sub in (run.root, run.checkpoints, run.plots):
        sub.mkdir(parents=True, exist_ok=True)
    run.config.write_text(cfg.to_yaml(), encoding="utf-8")
    return run


def _check_same_config(run: RunDir, cfg: RunConfig) -> None:
    """A resumed run must train the same thing; only the resume flag itself and the CPU thread count (how fast,
    not what: a study stopped at 1 thread may resume at 2) may differ."""
    import yaml

    if not run.config.exists():
        return
    old = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    new = cfg.model_dump(mode="json")
    for d in (old, new):
        d.get("train", {}).pop("resume", None)
        d.get("train", {}).pop("threads", None)
        d.get("output", {}).pop("overwrite", None)
    diff = sorted(config_diff(old, new))
    if diff:
        raise RunExistsError(
            f"cannot resume {run.root}: the configuration differs from the saved one at {', '.join(diff)}"
        )
