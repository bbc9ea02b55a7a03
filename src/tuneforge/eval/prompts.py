"""Chat prompts for evaluation items, rendered with `render_prompt` — the function training uses.

A k-shot prompt is a chat: each solved example is a user turn and an assistant turn, then the question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tuneforge.config import TaskSpec
from tuneforge.data.render import render_prompt, template_tool_support
from tuneforge.data.schema import Message
from tuneforge.data.toolcalls import TOOLS_SYSTEM
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


def plain_prompt(instruction: str | None, shots: Sequence[str], context: str) -> str:
    """A prompt without chat template, as lm-evaluation-harness builds one by default: the description, the k
    solved examples, then the item, separated by blank lines (its `fewshot_delimiter`)."""
    return "\n\n".join([*([instruction] if instruction else []), *shots, context])


def prompt_ids(
    tokenizer: Any, messages: Sequence[Message], tools: str | None = None, tool_format: str = "auto"
) -> list[int]:
    return render_prompt(tokenizer, messages, tools, tool_format)


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template shows tool schemas itself (many small models' templates ignore them)."""
    return template_tool_support(tokenizer).tools


# The tool prompt of templates that ignore `tools`: the one fallback text training, chat and serve use too
# (data.toolcalls; the renderer adds it, docs/tooluse.md), calls as <tool_call> blocks.
TOOL_SYSTEM = TOOLS_SYSTEM


def tool_messages(spec: TaskSpec, ex: Example) -> list[Message]:
    """The task's system prompt, then the example's own turns; the tools go to `render_prompt` with them."""
    system = spec.system
    own = [Message(m["role"], m["content"]) for m in ex.messages]  # type: ignore[arg-type]
    if system and own and own[0].role == "system":
        own = [Message("system", system + "\n\n" + own[0].content), *own[1:]]
    elif system:
        own = [Message("system", system), *own]
    return own


__all__ = [
    "TOOL_SYSTEM",
    "Item",
    "chat",
    "plain_prompt",
    "prompt_ids",
    "template_renders_tools",
    "tool_messages",
    "user_text",
]
