"""data preview: rendered samples as the model sees them, trained spans marked, truncation and drops said,
for chat (tools too), text and preference datasets."""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny import build_tokenizer
from tuneforge.config import RunConfig
from tuneforge.data.preview import preview
from tuneforge.stages import STAGES


def config(tmp_path: Path, rows: list[dict], fmt: str, **data: object) -> RunConfig:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    stage = data.pop("stage", "sft")
    return RunConfig.model_validate(
        {"stage": stage, "data": {"datasets": [{"path": str(path), "format": fmt}], **data}}
    )


def test_chat_sample_marks_the_trained_spans(tmp_path: Path) -> None:
    rows = [{"instruction": "Who are you?", "input": "", "output": "I am X."}] * 3
    out = preview(config(tmp_path, rows, "alpaca"), 2, build_tokenizer("chatml"))
    assert out.count("--- ") == 2 and "d.jsonl:1" in out and "d.jsonl:3" not in out
    assert "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n«I am X.<|im_end|>»" in out
    assert "tool format hermes" in out


def test_truncated_and_dropped_samples_are_named(tmp_path: Path) -> None:
    long = {"instruction": "word " * 60, "input": "", "output": "The answer."}
    out = preview(config(tmp_path, [long], "alpaca", cutoff_len=40), 1, build_tokenizer("chatml"))
    assert "TRUNCATED at data.cutoff_len=40" in out and "DROPPED: no trained token is left" in out


def test_tool_samples_show_the_schemas_and_the_left_out_tools(tmp_path: Path) -> None:
    tools = [{"name": f"tool_{i}", "description": f"thing {i}", "parameters": {}} for i in range(4)]
    tools.append({"name": "get_weather", "description": "weather of a city", "parameters": {}})
    call = {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    msgs = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "rain"},
        {"role": "assistant", "content": "It rains."},
    ]
    out = preview(
        config(tmp_path, [{"messages": msgs, "tools": tools}], "openai", max_tools=2), 1, build_tokenizer("qwen25")
    )
    assert "tool format native" in out and "(5 tools offered; data.max_tools=2 kept" in out and "left out:" in out
    assert '«<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call><|im_end|>»' in out
    assert "<tool_response>\nrain\n</tool_response>" in out


def test_text_and_preference_datasets(tmp_path: Path) -> None:
    text_cfg = config(tmp_path, [{"text": "plain words here"}], "text", stage="pt")
    out = preview(text_cfg, 1, build_tokenizer("chatml"), data_kind=STAGES["pt"].data)
    assert "«plain words here<|im_end|>»" in out
    pref = RunConfig.model_validate({"stage": "dpo", "data": {"datasets": [{"name": "iso_dates_pref"}]}})
    out = preview(pref, 1, build_tokenizer("chatml"), data_kind=STAGES["dpo"].data)
    assert "[chosen] " in out and "[rejected] " in out and "<|im_start|>assistant\n" in out
