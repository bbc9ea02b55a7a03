"""Chat prompts for evaluation items, rendered with `render_prompt` — the function training uses.

A k-shot prompt is a chat: each solved example is a user turn and an assistant turn, then the question.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tuneforge.config import TaskSpec
from tuneforge.data.render import render_prompt
from tuneforge.data.schema import Message
from tuneforge.eval.readers import Example


@dataclass(frozen=True)
class Item:
    """An example with the few-shot examples drawn for it (the same for every model evaluated)."""

    example: Example
    shots: tuple[Example, ...] = ()


def user_text(spec: TaskSpec, ex: Example, default_instruction: str | None, body: str | None = None) -> str:
    """The instruction (the task's, else the example's own, else the type's default), then the question."""
    instruction = spec.instruction or ex.instruction or default_instruction
    return "\n\n".join(p for p in (instruction, body if body is not None else ex.question) if p)


def chat(
    spec: TaskSpec,
    item: Item,
    question: Callable[[Example], str],
    answer: Callable[[Example], str],
    system: str | None = None,
) -> list[Message]:
    system = system or spec.system
    messages = [Message("system", system)] if system else []
    for shot in item.shots:
        messages += [Message("user", question(shot)), Message("assistant", answer(shot))]
    messages.append(Message("user", question(item.example)))
    return messages


def prompt_ids(tokenizer: Any, messages: Sequence[Message], tools: str | None = None) -> list[int]:
    return render_prompt(tokenizer, messages, tools)


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template shows tool schemas itself (many small models' templates ignore them)."""
    probe = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "probe_tool_x", "description": "", "parameters": {}}}
    try:
        text = tokenizer.apply_chat_template(probe, tools=[tool], tokenize=False, add_generation_prompt=True)
    except Exception:  # a template may raise on any unexpected input; then it cannot show tools either
        return False
    return "probe_tool_x" in str(text)


TOOL_SYSTEM = (
    "You are a helpful assistant with access to these functions:\n{tools}\n\n"
    "If the request can be answered with these functions, reply with only the function call(s) as JSON, "
    'for example [{{"name": "function_name", "arguments": {{"param": "value"}}}}]. '
    "If none of the functions fits, say so in plain text and call nothing."
)


def tool_messages(spec: TaskSpec, ex: Example, in_template: bool) -> list[Message]:
    """System prompt with the tools (unless the template shows them), then the example's own turns."""
    if in_template:
        system = spec.system
    else:
        tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in json.loads(ex.tools or "[]"))
        system = (spec.system + "\n\n" if spec.system else "") + TOOL_SYSTEM.format(tools=tools)
    own = [Message(m["role"], m["content"]) for m in ex.messages]  # type: ignore[arg-type]
    if system and own and own[0].role == "system":
        own = [Message("system", system + "\n\n" + own[0].content), *own[1:]]
    elif system:
        own = [Message("system", system), *own]
    return own


__all__ = ["TOOL_SYSTEM", "Item", "chat", "prompt_ids", "template_renders_tools", "tool_messages", "user_text"]
