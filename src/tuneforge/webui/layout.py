"""The page: a top row (run name, stage, model, runs folder), then the Train, Evaluate, Chat and Export tabs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from tuneforge.config import ConfigError, RunConfig
from tuneforge.inference import GenerationParams
from tuneforge.webui.form import FIELDS, STAGE_SECTIONS, build_config, dataset_names, section_title
from tuneforge.webui.widgets import BASE_MODEL, list_runs, make_widget, method_updates

if TYPE_CHECKING:
    from tuneforge.webui.app import WebUI

TOP_ROW = ("name", "stage", "model.path", "output.dir")
ROW_SIZE = 3


def build(ui: WebUI, values: dict[str, Any], datasets: list[str], cfg: RunConfig) -> gr.Blocks:
    from tuneforge.webui.app import EVAL_EXAMPLE

    method = cfg.method.name
    widgets: dict[str, Any] = {}
    boxes: dict[str, Any] = {}

    def add(spec_key: str) -> None:
        spec = next(s for s in FIELDS if s.key == spec_key)
        visible = spec.section != "method" or spec.key == "method.name" or method in spec.methods
        widgets[spec.key] = make_widget(spec, values[spec.key], method, visible)

    with gr.Blocks(title="tuneforge") as blocks:
        gr.Markdown("## tuneforge — every widget is named by its config key (`train.lr` in the form = in YAML)")
        with gr.Row():
            for key in TOP_ROW:
                add(key)
        with gr.Accordion("model", open=False), gr.Row():
            for spec in FIELDS:
                if spec.section == "model" and spec.key not in TOP_ROW:
                    add(spec.key)
        with gr.Tabs():
            with gr.Tab("Train", id="tab-train", elem_id="tab-train"), gr.Row():
                with gr.Column(scale=3):
                    for section in ("data", "method", "train", "output", *STAGE_SECTIONS):
                        shown = section not in STAGE_SECTIONS or cfg.stage in STAGE_SECTIONS[section]
                        with gr.Accordion(
                            section_title(section), open=section in ("data", "method"), visible=shown
                        ) as box:
                            boxes[section] = box
                            if section == "data":
                                widgets["data.datasets"] = gr.Dropdown(
                                    choices=dataset_names(cfg.data.dataset_dir),
                                    value=datasets,
                                    multiselect=True,
                                    allow_custom_value=True,
                                    label="data.datasets",
                                    info="Registered names (data.dataset_dir, then shipped); or type a path.",
                                    elem_id="data.datasets",
                                )
                            keys = [s.key for s in FIELDS if s.section == section and s.key not in TOP_ROW]
                            for at in range(0, len(keys), ROW_SIZE):
                                with gr.Row():
                                    for key in keys[at : at + ROW_SIZE]:
                                        add(key)
                with gr.Column(scale=2):
                    yaml_box = gr.Code(
                        language="yaml",
                        label="config (tuneforge train reads this file)",
                        elem_id="config-yaml",
                        interactive=False,
                    )
                    error_box = gr.Markdown(elem_id="config-error")
                    with gr.Row():
                        train_btn = gr.Button("Train", variant="primary", elem_id="train-start")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
                    train_status = gr.Textbox(label="status", elem_id="train-status", interactive=False)
                    loss_plot = gr.LinePlot(
                        x="step",
                        y="loss",
                        color="split",
                        label="loss (metrics.jsonl)",
                        elem_id="train-loss",
                        height=260,
                    )
                    train_log = gr.Textbox(
                        label="log", lines=12, max_lines=12, autoscroll=True, elem_id="train-log", interactive=False
                    )
            with gr.Tab("Evaluate", id="tab-eval", elem_id="tab-eval"):
                eval_config = gr.Textbox(
                    value=str(EVAL_EXAMPLE), label="eval config (YAML with eval.tasks)", elem_id="eval.config"
                )
                eval_runs = gr.Dropdown(choices=[], multiselect=True, label="eval.runs", elem_id="eval.runs")
                with gr.Row():
                    eval_limit = gr.Number(value=None, precision=0, label="eval.limit", elem_id="eval.limit")
                    eval_base = gr.Checkbox(value=True, label="eval.base", elem_id="eval.base")
                    eval_refresh = gr.Button("Refresh runs", elem_id="eval-refresh")
                eval_btn = gr.Button("Evaluate", variant="primary", elem_id="eval-start")
                eval_status = gr.Textbox(label="status", elem_id="eval-status", interactive=False)
                eval_log = gr.Textbox(
                    label="log and report", lines=16, max_lines=16, elem_id="eval-log", interactive=False
                )
            with gr.Tab("Chat", id="tab-chat", elem_id="tab-chat"):
                with gr.Row():
                    chat_run = gr.Dropdown(
                        choices=[BASE_MODEL], value=BASE_MODEL, label="chat.run", elem_id="chat.run", scale=3
                    )
                    chat_refresh = gr.Button("Refresh runs", elem_id="chat-refresh", scale=1)
                    chat_load = gr.Button("Load", variant="primary", elem_id="chat-load", scale=1)
                chat_status = gr.Textbox(label="loaded", elem_id="chat-status", interactive=False)
                with gr.Row():
                    chat_system = gr.Textbox(label="chat.system", elem_id="chat.system", scale=3)
                    chat_tokens = gr.Number(
                        value=64, precision=0, label="chat.max_new_tokens", elem_id="chat.max_new_tokens"
                    )
                    chat_temp = gr.Number(value=0.0, label="chat.temperature (0 = greedy)", elem_id="chat.temperature")
                chatbot = gr.Chatbot(label="chat", elem_id="chat-history", height=320)
                with gr.Row():
                    chat_msg = gr.Textbox(label="message", elem_id="chat-message", scale=4)
                    chat_send = gr.Button("Send", variant="primary", elem_id="chat-send", scale=1)
                    chat_clear = gr.Button("Clear", elem_id="chat-clear", scale=1)
            with gr.Tab("Export", id="tab-export", elem_id="tab-export"):
                with gr.Row():
                    export_run = gr.Dropdown(choices=[], label="export.run", elem_id="export.run", scale=3)
                    export_refresh = gr.Button("Refresh runs", elem_id="export-refresh", scale=1)
                with gr.Row():
                    export_format = gr.Radio(
                        ["hf", "gguf", "gguf-lora"], value="hf", label="export.format", elem_id="export.format"
                    )
                    export_type = gr.Radio(
                        ["f16", "q8_0"], value="f16", label="export.gguf_type", elem_id="export.gguf_type"
                    )
                    export_out = gr.Textbox(label="export.out (default: RUN/merged)", elem_id="export.out")
                    export_overwrite = gr.Checkbox(label="export.overwrite", elem_id="export.overwrite")
                export_btn = gr.Button("Export", variant="primary", elem_id="export-start")
                export_status = gr.Textbox(label="status", elem_id="export-status", interactive=False)
                export_log = gr.Textbox(label="log", lines=16, max_lines=16, elem_id="export-log", interactive=False)
        timer = gr.Timer(1.0)
        seen = gr.State({})

        keys = [s.key for s in FIELDS]
        form_inputs = [widgets[k] for k in keys] + [widgets["data.datasets"]]
        method_keys = [s.key for s in FIELDS if s.section == "method" and s.key != "method.name"]

        def form_values(args: tuple[Any, ...]) -> tuple[dict[str, Any], list[str]]:
            return dict(zip(keys, args[: len(keys)], strict=True)), list(args[len(keys)] or [])

        def preview(*args: Any) -> tuple[str, str]:
            return ui.preview(*form_values(args))

        def on_stage(stage: str) -> list[Any]:
            return [gr.update(visible=stage in STAGE_SECTIONS[s]) for s in STAGE_SECTIONS]

        def train(*args: Any) -> tuple[str, str]:
            status = ui.start_train(*form_values(args))
            return status, ""

        def tick(state: dict[str, Any]) -> tuple[Any, ...]:
            status, log, frame, points = ui.train_state()
            e_status, e_log = ui.job_state("eval")
            x_status, x_log = ui.job_state("export")
            new = {"train": (status, log), "points": points, "eval": (e_status, e_log), "export": (x_status, x_log)}

            def pick(key: str, value: Any) -> Any:
                return gr.skip() if state.get(key) == new[key] else value

            plot = gr.skip() if state.get("points") == points or not points else frame
            return (
                pick("train", status),
                pick("train", log),
                plot,
                pick("eval", e_status),
                pick("eval", e_log),
                pick("export", x_status),
                pick("export", x_log),
                new,
            )

        def refresh(runs_dir: str) -> tuple[Any, ...]:
            runs = list_runs(runs_dir)
            return (
                gr.update(choices=runs),
                gr.update(choices=[BASE_MODEL, *runs], value=runs[0] if runs else BASE_MODEL),
                gr.update(choices=runs, value=runs[0] if runs else None),
            )

        def load_chat(source: str, *args: Any) -> str:
            model_cfg = None
            if source in (BASE_MODEL, "", None):  # the base model is the form's model section
                try:
                    model_cfg = build_config(*form_values(args)).model
                except (ConfigError, ValueError) as e:
                    return f"error: {e}"
            return ui.load_chat(source, model_cfg)

        def user_turn(message: str, history: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
            if not message.strip():
                return "", history
            return "", [*history, {"role": "user", "content": message}]

        def bot_turn(history: list[dict[str, Any]], system: str, tokens: float | None, temp: float | None):
            if not history or history[-1]["role"] != "user":
                yield history
                return
            params = GenerationParams(max_new_tokens=int(tokens or 64), temperature=float(temp or 0.0))
            yield from ui.chat(history, system or "", params)

        # .change also fires on values set by the page itself (a method switch loads that method's defaults)
        gr.on([w.change for w in form_inputs], preview, inputs=form_inputs, outputs=[yaml_box, error_box])
        blocks.load(preview, inputs=form_inputs, outputs=[yaml_box, error_box])
        widgets["method.name"].change(
            method_updates, inputs=widgets["method.name"], outputs=[widgets[k] for k in method_keys]
        )
        widgets["stage"].change(on_stage, inputs=widgets["stage"], outputs=[boxes[s] for s in STAGE_SECTIONS])
        widgets["data.dataset_dir"].change(
            lambda d: gr.update(choices=dataset_names(d)),
            inputs=widgets["data.dataset_dir"],
            outputs=widgets["data.datasets"],
        )
        train_btn.click(train, inputs=form_inputs, outputs=[train_status, error_box])
        stop_btn.click(lambda: _stop(ui, "train"), outputs=train_status)
        timer.tick(
            tick,
            inputs=seen,
            outputs=[train_status, train_log, loss_plot, eval_status, eval_log, export_status, export_log, seen],
        )
        refresh_outputs = [eval_runs, chat_run, export_run]
        for btn in (eval_refresh, chat_refresh, export_refresh):
            btn.click(refresh, inputs=widgets["output.dir"], outputs=refresh_outputs)
        blocks.load(refresh, inputs=widgets["output.dir"], outputs=refresh_outputs)
        eval_inputs = [eval_config, eval_runs, eval_limit, eval_base, widgets["output.dir"]]
        eval_btn.click(ui.start_eval, inputs=eval_inputs, outputs=eval_status)
        export_btn.click(
            ui.start_export,
            inputs=[export_run, export_format, export_type, export_out, export_overwrite],
            outputs=export_status,
        )
        chat_load.click(load_chat, inputs=[chat_run, *form_inputs], outputs=chat_status)
        for trigger in (chat_msg.submit, chat_send.click):
            trigger(user_turn, inputs=[chat_msg, chatbot], outputs=[chat_msg, chatbot]).then(
                bot_turn, inputs=[chatbot, chat_system, chat_tokens, chat_temp], outputs=chatbot
            )
        chat_clear.click(lambda: [], outputs=chatbot)
    return blocks


def _stop(ui: WebUI, kind: str) -> str:
    job = ui.jobs.get(kind)
    if job is None:
        return "nothing to stop"
    job.stop()
    return job.status()


__all__ = ["build"]
