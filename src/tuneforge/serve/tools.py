"""Tool calling on /v1/chat/completions: tool_choice, validated calls, and OpenAI's streamed tool-call deltas.

- `none`: the tools are not shown and nothing is parsed. `auto` (the default with tools): the model decides.
- `required` / a named function (`{"type": "function", "function": {"name": ...}}`): constrained by prompting
  and a prefix: the system turn says a call is required (named: only that function is shown), and the prompt
  ends with the opening of a call in the format the model was trained on (`data.render.call_opening`, e.g.
  `<tool_call>\\n{"name": "` + the name), so the model can only continue with one.
- Every call is validated against the offered tool's schema (`data.toolschema.argument_problem`); an answer
  holding a call that does not parse or does not fit is returned whole as content with finish_reason "stop",
  never as a broken call.
- Streaming: text is sent as it comes until a call may begin (`data.toolcalls.opens_call`); from there it is
  held until the end, then sent as `delta.tool_calls` chunks (id, type, name, then the arguments) with
  finish_reason "tool_calls", or as content if it was not a valid call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.render import call_opening
from tuneforge.data.schema import DataError, Message
from tuneforge.data.toolcalls import ToolCall, opens_call, parse_calls
from tuneforge.data.toolschema import argument_problem, check_tool_schema, function_of, tool_names
from tuneforge.serve.protocol import ChatCompletionRequest, OpenAIToolCall

log = logging.getLogger("tuneforge.serve")

REQUIRED_NOTE = "Answer with a function call."
NAMED_NOTE = "Answer by calling the function {name}."


@dataclass(frozen=True)
class ToolPlan:
    """What one request does with tools: those shown (None: none), the choice, the forced call opening."""

    tools: list[dict[str, Any]] | None = None
    choice: str = "none"  # none | auto | required | named
    name: str | None = None  # the function of a named tool_choice
    opening: str = ""

    @property
    def tools_json(self) -> str | None:
        return json.dumps(self.tools, ensure_ascii=False) if self.tools else None


def plan_tools(req: ChatCompletionRequest, tokenizer: Any, tool_format: str) -> ToolPlan:
    """The request's tools and tool_choice, checked (a DataError names the field at fault)."""
    tools = list(req.tools or [])
    for i, tool in enumerate(tools):
        check_tool_schema(tool, f"tools[{i}]")
    choice = req.tool_choice if req.tool_choice is not None else ("auto" if tools else "none")
    name = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise DataError(
                'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}, '
                f"got {choice!r:.80}"
            )
        if name not in tool_names(tools):
            offered = ", ".join(tool_names(tools)) or "none"
            raise DataError(f"tool_choice names {name!r}, which is not among the tools ({offered})")
        tools, choice = [t for t in tools if function_of(t).get("name") == name], "named"
    elif choice not in ("none", "auto", "required"):
        raise DataError(f'tool_choice must be "none", "auto", "required" or a function, got {choice!r:.40}')
    if choice == "none" or not tools:
        if choice in ("required", "named"):
            raise DataError(f"tool_choice {choice!r} needs tools")
        return ToolPlan()
    opening = ""
    if choice in ("required", "named"):
        opening = call_opening(tokenizer, tool_format) or ""  # ends right before the function's name
        if opening and name:
            opening += name
    return ToolPlan(tools, choice, name, opening)


def with_note(messages: list[Message], plan: ToolPlan) -> list[Message]:
    """The messages with the required / named instruction added to the system turn."""
    note = {"required": REQUIRED_NOTE, "named": NAMED_NOTE.format(name=plan.name)}.get(plan.choice)
    if note is None:
        return messages
    if messages and messages[0].role == "system":
        return [Message("system", f"{messages[0].content}\n\n{note}"), *messages[1:]]
    return [Message("system", note), *messages]


def read_calls(text: str, plan: ToolPlan) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of an answer: valid calls only; anything broken or off-schema stays content, whole."""
    said = plan.opening + text
    if plan.tools is None:
        return text, []
    content, calls = parse_calls(said)
    if not calls:
        return said, []
    problems = [p for c in calls if (p := _problem(c, plan))]
    if problems:
        log.info("a tool call was returned as content: %s", "; ".join(problems))
        return said, []
    return content or None, calls


def _problem(call: ToolCall, plan: ToolPlan) -> str | None:
    if plan.name is not None and call.name != plan.name:
        return f"called {call.name!r} where tool_choice names {plan.name!r}"
    return argument_problem(call.name, call.arguments, plan.tools or [])


@dataclass
class ToolStream:
    """Turns generated text pieces into chat-chunk deltas: content as it comes, calls once they are complete."""

    plan: ToolPlan
    text: str = ""
    sent: int = 0
    calls: list[ToolCall] = field(default_factory=list)

    def feed(self, piece: str) -> Iterator[dict[str, Any]]:
        self.text += piece
        if self.plan.tools is None:
            end = len(self.text)
        elif self.plan.opening:
            end = 0  # the whole answer is a call
        else:
            ahead = self.text[self.sent :]
            at = opens_call(ahead)
            # trailing spaces wait too: before a call they are not content (the non-streamed answer strips them)
            end = self.sent + len((ahead if at < 0 else ahead[:at]).rstrip())
        if end > self.sent:
            yield {"content": self.text[self.sent : end]}
            self.sent = end

    def close(self) -> Iterator[dict[str, Any]]:
        """The held text: as tool_calls deltas (then `self.calls` is set), or as content."""
        rest = self.text[self.sent :]
        if self.plan.tools is None or not (rest or self.plan.opening):
            if rest:
                yield {"content": rest}
            return
        content, calls = read_calls(rest, self.plan)
        if not calls:
            yield {"content": content or ""}
            return
        self.calls = calls
        if content:
            yield {"content": content}
        yield from tool_call_deltas(calls)


def tool_call_deltas(calls: Sequence[ToolCall]) -> Iterator[dict[str, Any]]:
    """OpenAI's shape: per call, a first delta with id, type and name (arguments ""), then the arguments."""
    for i, call in enumerate(calls):
        wire = OpenAIToolCall.of(call)
        head = {"index": i, "id": wire.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield {"tool_calls": [head]}
        yield {"tool_calls": [{"index": i, "function": {"arguments": wire.function.arguments}}]}


__all__ = ["ToolPlan", "ToolStream", "plan_tools", "read_calls", "tool_call_deltas", "with_note"]
