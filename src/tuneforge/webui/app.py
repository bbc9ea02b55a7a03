"""`tuneforge webui`: a Gradio front end (the LlamaBoard role) over the same config and the same CLI.

The Train tab is a form with one widget per config key (the widget's id and label are the key path); the YAML it
shows is validated by `tuneforge.config.load` and is the file `tuneforge train` runs, started as a subprocess.
Evaluate and Export start `tuneforge eval` / `tuneforge export` the same way; Chat loads a run in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.config import ModelConfig, RunConfig
from tuneforge.data.schema import Message
from tuneforge.errors import TuneforgeError
from tuneforge.inference import GenerationParams, LocalEngine
from tuneforge.runs import RunDir, model_config_of_run
from tuneforge.webui.form import build_config, config_yaml, write_config
from tuneforge.webui.jobs import Jobs, cli_command
from tuneforge.webui.widgets import (
    dataset_values,
    initial_values,
    loss_frame,
)

EVAL_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "eval_quickstart.yaml"
# System fonts only: the default theme would fetch web fonts, and tuneforge runs offline.
CHAT_ROLES = ("user", "assistant")
EMPTY_ANSWER = "(the answer has no visible text: the model produced only special tokens)"
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


class WebUI:
    """Server-side state: the running jobs, the run being trained and the chat engine."""

    def __init__(self) -> None:
        self.jobs = Jobs()
        self.train_run: Path | None = None
        self.engine: LocalEngine | None = None
        self.engine_name = ""

    # --- Train -----------------------------------------------------------------------------------------------
    def preview(self, values: dict[str, Any], datasets: list[str]) -> tuple[str, str]:
        try:
            return config_yaml(build_config(values, datasets)), ""
        except TuneforgeError as e:
            return "", f"```\nerror: {e}\n```"

    def start_train(self, values: dict[str, Any], datasets: list[str]) -> str:
        try:
            cfg = build_config(values, datasets)
            path = write_config(cfg, config_yaml(cfg))
            job = self.jobs.start("train", cli_command("train", str(path)), path.with_suffix(".log"))
        except TuneforgeError as e:
            return f"error: {e}"
        self.train_run = cfg.run_dir
        return f"{job.status()}: tuneforge train {path}"

    def train_state(self) -> tuple[str, str, Any, int]:
        job = self.jobs.get("train")
        if job is None:
            return "", "", None, 0
        records = RunDir(self.train_run).read_metrics() if self.train_run else []
        frame = loss_frame(records)
        return job.status(), job.text(), frame, len(frame)

    # --- Evaluate / Export --------------------------------------------------------------------------------------
    def start_eval(self, config: str, runs: list[str], limit: float | None, base: bool, runs_dir: str) -> str:
        args = [config, *(a for r in runs for a in ("--run", r)), "eval.runs=[]", f"eval.base={str(base).lower()}"]
        if limit:
            args.append(f"eval.limit={int(limit)}")
        return self._start("eval", args, Path(config).with_suffix(".eval.log").name, Path(runs_dir or "runs"))

    def start_export(self, run: str, fmt: str, gguf_type: str, out: str, overwrite: bool) -> str:
        if not run:
            return "error: choose a run (export.run)"
        args = ["--run", run, "--format", fmt, "--gguf-type", gguf_type]
        args += ["--out", out] if out.strip() else []
        args += ["--overwrite"] if overwrite else []
        return self._start("export", args, f"{Path(run).name}.export.log", Path(run).parent)

    def _start(self, verb: str, args: list[str], log_name: str, runs_dir: Path | None = None) -> str:
        folder = (runs_dir or Path("runs")) / "webui"
        try:
            job = self.jobs.start(verb, cli_command(verb, *args), folder / log_name)
        except TuneforgeError as e:
            return f"error: {e}"
        return job.status()

    def job_state(self, kind: str) -> tuple[str, str]:
        job = self.jobs.get(kind)
        return (job.status(), job.text()) if job else ("", "")

    # --- Chat ------------------------------------------------------------------------------------------------
    def load_chat(self, source: str, model_cfg: ModelConfig | None) -> str:
        try:
            if model_cfg is not None:
                engine = LocalEngine(model_cfg)
                name = f"base model {model_cfg.path}"
            else:
                cfg, output = model_config_of_run(Path(source))
                engine = LocalEngine(cfg, output)
                name = f"{source} ({output.name} on {cfg.path})"
        except (TuneforgeError, OSError) as e:  # OSError: transformers on a folder that holds no model
            return f"error: {e}"
        self.engine, self.engine_name = engine, name
        return f"loaded {name}"

    def chat(self, history: list[dict[str, Any]], system: str, params: GenerationParams) -> Iterator[list[dict]]:
        if self.engine is None:
            yield [*history, {"role": "assistant", "content": "(load a run or the base model first)"}]
            return
        messages = [Message("system", system)] if system.strip() else []
        messages += [Message(m["role"], _text(m["content"])) for m in history if m["role"] in CHAT_ROLES]
        answer = ""
        for piece in self.engine.stream(messages, params):
            answer += piece
            yield [*history, {"role": "assistant", "content": answer}]
        text = answer.strip() or EMPTY_ANSWER
        yield [*history, {"role": "assistant", "content": text}]


def _text(content: Any) -> str:
    """Chatbot message content as plain text (Gradio may hand back a list of content parts)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def create_app(initial: RunConfig | None = None) -> gr.Blocks:
    """The Blocks app; `initial` fills the form (default: every config default, name webui-N)."""
    from tuneforge.webui.layout import build

    ui = WebUI()
    cfg = initial or RunConfig()
    blocks = build(ui, initial_values(cfg), dataset_values(cfg), cfg)
    blocks.webui = ui  # type: ignore[attr-defined]  # tests and launch() reach the jobs through it
    return blocks


def launch(
    initial: RunConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> gr.Blocks:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = create_app(initial)
    try:
        app.launch(
            server_name=host, server_port=port, auth=auth, prevent_thread_lock=not block, theme=THEME, quiet=not block
        )
    finally:
        if block:  # the page is gone (Ctrl-C): nothing could stop its jobs any more, so they stop with it
            app.webui.jobs.stop_all()  # type: ignore[attr-defined]
    return app


__all__ = ["EMPTY_ANSWER", "EVAL_EXAMPLE", "THEME", "WebUI", "create_app", "launch"]
