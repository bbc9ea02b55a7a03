"""Which tool layout a chat template renders itself, and what `data.tool_format` makes of it (docs/tooluse.md).

`template_tool_support` renders a probe with and without a tool, and an assistant turn with one and with two
`tool_calls`: a template that shows the probe's name renders them natively (Qwen2.5/3, Llama-3.1); one that
does not (SmolLM2, many small models) gets the hermes fallback from data.render. The result depends only on the
template text, so it is probed once per template.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from tuneforge.config.sections import TOOL_FORMATS
from tuneforge.data.schema import DataError
from tuneforge.data.toolcalls import parse_calls

log = logging.getLogger("tuneforge.data")

ToolFormat = Literal["auto", "native", "hermes"]


@dataclass(frozen=True)
class ToolRendering:
    """Who writes what: the template the tool schemas (`tools`) and the calls (`calls`), or tuneforge's fallback."""

    tools: bool
    calls: bool
    parallel: bool = False  # the template writes several calls in one turn (Llama-3.1's refuses)

    @property
    def name(self) -> str:
        if self.tools and self.calls:
            return "native"
        if not self.tools and not self.calls:
            return "hermes"
        return "native tools, hermes calls" if self.tools else "hermes tools, native calls"


HERMES = ToolRendering(tools=False, calls=False)
PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "tf_probe_fn",
        "description": "probe",
        "parameters": {"type": "object", "properties": {"tf_probe_arg": {"type": "string"}}, "required": []},
    },
}
_PROBE_CALL = {"type": "function", "function": {"name": "tf_probe_fn", "arguments": {"tf_probe_arg": "tf_probe_v"}}}
_SUPPORT: dict[str, ToolRendering] = {}  # chat template text -> what it renders (the probe is a pure function of it)
_WARNED: set[str] = set()


def template_tool_support(tokenizer: Any) -> ToolRendering:
    """Whether the tokenizer's chat template renders `tools` and assistant `tool_calls` itself (probed once)."""
    key = str(getattr(tokenizer, "chat_template", None))
    if key not in _SUPPORT:
        user = [{"role": "user", "content": "hi"}]
        plain = _probe(tokenizer, user, None)
        with_tools = _probe(tokenizer, user, [PROBE_TOOL])
        _SUPPORT[key] = ToolRendering(
            tools=with_tools is not None and with_tools != plain and "tf_probe_fn" in with_tools,
            calls=_reads_back(tokenizer, 1),
            parallel=_reads_back(tokenizer, 2),
        )
    return _SUPPORT[key]


def _reads_back(tokenizer: Any, n: int) -> bool:
    """Whether an assistant turn with n probe `tool_calls`, as the template writes it, parses back into exactly
    those calls and nothing else: native calls only where serve and eval can read what the model learns (a
    template with its own call markup, e.g. `<tools>` tags, gets the hermes calls instead)."""
    user = [{"role": "user", "content": "hi"}]
    prompt = _probe(tokenizer, user, None, generation=True)
    full = _probe(tokenizer, [*user, {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL] * n}], None)
    if prompt is None or full is None or not full.startswith(prompt):
        return False
    answer = full[len(prompt) :]
    for token in getattr(tokenizer, "all_special_tokens", []):
        answer = answer.replace(token, "")
    content, calls = parse_calls(answer.strip())
    return (
        not content and [(c.name, c.arguments) for c in calls] == [("tf_probe_fn", {"tf_probe_arg": "tf_probe_v"})] * n
    )


def _probe(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, generation: bool = False
) -> str | None:
    try:
        return str(
            tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation)
        )
    except Exception:  # a template may raise on anything it does not expect; then it cannot render it either
        return None


def tool_rendering(tokenizer: Any, tool_format: str = "auto") -> ToolRendering:
    """What `data.tool_format` means for this tokenizer; `native` on a template that cannot is a DataError."""
    if tool_format == "hermes":
        return HERMES
    support = template_tool_support(tokenizer)
    if tool_format == "native":
        if not (support.tools and support.calls):
            missing = " and ".join(w for w, ok in (("tools", support.tools), ("tool_calls", support.calls)) if not ok)
            raise DataError(
                f"data.tool_format=native, but the chat template of {getattr(tokenizer, 'name_or_path', '')!r} "
                f"does not render {missing}; use data.tool_format=auto or hermes (docs/tooluse.md)"
            )
        return support
    if tool_format != "auto":
        raise DataError(f"tool format {tool_format!r} is not one of {', '.join(TOOL_FORMATS)}")
    if not support.tools:
        key = str(getattr(tokenizer, "chat_template", None))
        if key not in _WARNED:
            _WARNED.add(key)
            log.warning(
                "the chat template of %r ignores `tools`: tool schemas go into the system turn and calls are "
                "<tool_call> blocks (the hermes fallback, docs/tooluse.md)",
                getattr(tokenizer, "name_or_path", ""),
            )
    return support


def resolved_tool_format(tokenizer: Any, tool_format: str = "auto") -> str:
    """The name a run records (data_stats.json `tool_format`): native, hermes, or which part is native."""
    if tool_format == "hermes" or not getattr(tokenizer, "chat_template", None):
        return HERMES.name
    if tool_format == "native":
        return tool_rendering(tokenizer, tool_format).name
    return template_tool_support(tokenizer).name  # auto, without the fallback's warning (no tools may be used)


__all__ = [
    "HERMES",
    "TOOL_FORMATS",
    "ToolFormat",
    "ToolRendering",
    "resolved_tool_format",
    "template_tool_support",
    "tool_rendering",
]
