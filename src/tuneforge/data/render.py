"""Samples -> token ids and labels, through the tokenizer's own chat template.

The same functions render training data and chat prompts, so a model is asked exactly the way it was
trained. Assistant turns are found by prefix difference: the text of messages[:k] with the generation prompt
is a prefix of the text of messages[:k+1], and what lies between is the assistant's turn. This works for any
template that renders earlier turns unchanged, without per-model tables of role markers (transformers'
`{% generation %}` masks would do the same, but few shipped templates have them).

Each piece between boundaries is tokenized on its own, so the tokens before an assistant turn are exactly
`render_prompt`'s tokens for that prefix: what the model sees at inference time.

Tools (docs/tooluse.md): a Message holds its calls as `data.toolcalls.render_calls` text. Whether a template
writes `tools` and assistant `tool_calls` itself is found by rendering a probe with and without them
(`template_tool_support`); where it does (Qwen2.5/3, Llama-3.1), the schemas go to the template and the calls
go as structured `tool_calls`; where it does not (SmolLM2, many small models' templates), the fallback puts the
schemas into the system turn (`toolcalls.tools_system_text`, the Hermes/Qwen `<tools>` convention) and leaves
the calls as `<tool_call>` blocks in the content. `data.tool_format` (auto | native | hermes) picks; the same
choice renders training data, chat, serve and eval prompts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from tuneforge.data.schema import Conversation, DataError, Message, Text
from tuneforge.data.tool_retriever import select_tools
from tuneforge.data.tool_templates import (
    HERMES,
    PROBE_TOOL,
    TOOL_FORMATS,
    ToolFormat,
    ToolRendering,
    resolved_tool_format,
    template_tool_support,
    tool_rendering,
)
from tuneforge.data.toolcalls import ToolCall, render_calls, split_tagged, tools_system_text

IGNORE_INDEX = -100  # the label transformers' losses skip

# Tokens chat templates close a turn with; labelled so the model learns to stop (see `_answer_labels`).
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|end|>",
)


@dataclass(frozen=True)
class Rendered:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.input_ids)

    @property
    def label_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's EOS plus the end-of-turn tokens of common chat templates that it has."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in END_OF_TURN_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return ids


def render_prompt(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: str | None = None,
    tool_format: str = "auto",
    max_tools: int | None = None,
) -> list[int]:
    """Token ids of a chat prompt, ending with the template's assistant header (generation prompt)."""
    _require_template(tokenizer)
    dicts, schemas = chat_dicts(tokenizer, messages, tools, tool_format, max_tools, "prompt")
    return _encode(tokenizer, _chat_text(tokenizer, dicts, schemas, True, "prompt"))


def answer_ids(tokenizer: Any, messages: Sequence[Message], answer: str) -> list[int]:
    """The token ids of an assistant `answer` after the prompt of `messages`, as `render_conversation` labels it
    (the template's text after the generation prompt, encoded on its own): evaluation reads a label's
    probability at the very position, and as the very token, that training taught."""
    _require_template(tokenizer)
    dicts, _ = chat_dicts(tokenizer, messages, None)
    prompt = _chat_text(tokenizer, dicts, None, True, "prompt")
    full = _chat_text(tokenizer, [*dicts, {"role": "assistant", "content": answer}], None, False, "answer")
    _require_prefix(prompt, full, len(dicts), "answer")
    return _encode(tokenizer, full[len(prompt) :])


def trained_answer_ids(tokenizer: Any, messages: Sequence[Message], answer: str) -> list[int]:
    """`answer_ids` up to and including its end-of-turn token: the tokens training's loss covers (what a template
    adds after the turn's end, e.g. a newline, is never labelled)."""
    ids = answer_ids(tokenizer, messages, answer)
    stop = end_of_turn_ids(tokenizer)
    end = next((k for k, t in enumerate(ids) if t in stop), len(ids) - 1)
    return ids[: end + 1]


def chat_dicts(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: str | None,
    tool_format: str = "auto",
    max_tools: int | None = None,
    src: str = "tools",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages for apply_chat_template, tools for it): the schemas and calls placed as `tool_format` says."""
    schemas = parse_tools(tools, src)
    how = tool_rendering(tokenizer, tool_format) if schemas or _has_calls(messages) else HERMES
    if schemas and max_tools is not None:
        schemas = tools_shown(schemas, messages, max_tools)
    dicts: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and how.calls:
            content, calls = split_tagged(m.content)
            if len(calls) > 1 and not how.parallel:
                raise DataError(
                    f"{src}: an assistant turn makes {len(calls)} parallel calls, which this chat template cannot "
                    "write (it takes one call per turn); set data.tool_format=hermes to train them as <tool_call> "
                    "blocks"
                )
            if calls:
                d = {"role": "assistant", "content": content, "tool_calls": [_call_dict(c) for c in calls]}
        dicts.append(d)
    if schemas and not how.tools:
        if dicts and dicts[0]["role"] == "system":
            dicts[0] = {**dicts[0], "content": tools_system_text(schemas, dicts[0]["content"])}
        else:
            dicts.insert(0, {"role": "system", "content": tools_system_text(schemas)})
    return dicts, (schemas if how.tools else None)


def tools_shown(schemas: list[dict[str, Any]], messages: Sequence[Message], max_tools: int) -> list[dict[str, Any]]:
    """The tools a prompt shows when there are more than `max_tools`: the called ones and the best by BM25."""
    called = [c.name for m in messages if m.role == "assistant" for c in split_tagged(m.content)[1]]
    query = "\n".join(m.content for m in messages if m.role == "user")
    return [dict(t) for t in select_tools(schemas, query, max_tools, called)]


def _has_calls(messages: Sequence[Message]) -> bool:
    return any(m.role == "assistant" and "<tool_call>" in m.content for m in messages)


def _call_dict(call: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    if call.id:
        out["id"] = call.id
    return out


def call_opening(tokenizer: Any, tool_format: str = "auto") -> str | None:
    """The text an assistant turn that calls a function starts with, up to the function's name.

    E.g. `<tool_call>\\n{"name": "` (hermes, Qwen) or `{"name": "` (Llama-3.1): found by rendering a probe call
    the way `tool_format` renders calls. The server appends it to the prompt for tool_choice required or a named
    function, so the model can only continue with a call. None where no such opening exists.
    """
    call = render_calls([ToolCall("tf_probe_fn", {"tf_probe_arg": "tf_probe_v"})])
    msgs = [Message("user", "hi"), Message("assistant", call)]
    tools = json.dumps([PROBE_TOOL])
    try:
        prompt = _chat_text(tokenizer, *chat_dicts(tokenizer, msgs[:1], tools, tool_format), True, "")
        full = _chat_text(tokenizer, *chat_dicts(tokenizer, msgs, tools, tool_format), False, "")
    except DataError:
        return None
    answer = full[len(prompt) :] if full.startswith(prompt) else ""
    at = answer.find("tf_probe_fn")
    return answer[:at] if at > 0 else None


def render_conversation(
    tokenizer: Any,
    conv: Conversation,
    cutoff_len: int,
    train_on_prompt: bool = False,
    tool_format: str = "auto",
    max_tools: int | None = None,
) -> Rendered | None:
    """input_ids and labels for a chat; labels are IGNORE_INDEX except on assistant turns.

    Keeps the first `cutoff_len` tokens; returns None when no labelled token survives (the caller counts it).
    """
    _require_template(tokenizer)
    src = conv.source
    msgs, tools = chat_dicts(tokenizer, conv.messages, conv.tools, tool_format, max_tools, src or "tools")
    # chat_dicts may put a system turn first; the assistant turns keep their order, so match them up in order
    trained = iter([m.trained for m in conv.messages if m.role == "assistant"])
    stop = end_of_turn_ids(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    done = ""  # template text already turned into ids
    for k, message in enumerate(msgs):
        if message["role"] != "assistant":
            continue
        if k == 0:
            raise DataError(f"{src}: the conversation starts with an assistant message; a user turn must come first")
        prompt = _chat_text(tokenizer, msgs[:k], tools, True, src)
        full = _chat_text(tokenizer, msgs[: k + 1], tools, False, src)
        _require_prefix(done, prompt, k, src)
        _require_prefix(prompt, full, k, src)
        head = _encode(tokenizer, prompt[len(done) :])
        answer = _encode(tokenizer, full[len(prompt) :])
        ids += head + answer
        said = _answer_labels(answer, stop) if next(trained) else [IGNORE_INDEX] * len(answer)
        labels += [IGNORE_INDEX] * len(head) + said
        done = full
    whole = _chat_text(tokenizer, msgs, tools, False, src)
    _require_prefix(done, whole, len(msgs), src)
    tail = _encode(tokenizer, whole[len(done) :])
    ids += tail
    labels += [IGNORE_INDEX] * len(tail)
    if train_on_prompt:
        labels = list(ids)
    return _truncate(ids, labels, cutoff_len)


def render_text(tokenizer: Any, text: Text, cutoff_len: int) -> Rendered:
    """All tokens labelled, EOS appended so documents end; the tokenizer adds its own BOS if it uses one."""
    ids = list(tokenizer(text.text)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    rendered = _truncate(ids, list(ids), cutoff_len)
    if rendered is None:
        raise DataError(f"{text.source}: the text renders to no tokens")
    return rendered


def parse_tools(tools: str | None, source: str = "tools") -> list[dict[str, Any]] | None:
    """Tool schemas for apply_chat_template, in the {"type": "function", "function": ...} form.

    LLaMA-Factory data (e.g. glaive) stores bare {name, description, parameters} objects, while transformers'
    chat templates expect the wrapped JSON-schema form, so bare ones are wrapped here.
    """
    if not tools:
        return None
    try:
        value = json.loads(tools)
    except json.JSONDecodeError as e:
        raise DataError(f"{source}: tools are not valid JSON ({e.msg}): {tools!r:.80}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise DataError(f"{source}: tools must be a JSON list of tool schemas, got {tools!r:.80}")
    return [t if "type" in t else {"type": "function", "function": t} for t in value] or None


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template, so chat data cannot "
            "be rendered; set model.chat_template to a Jinja template (inline, or a path to a .jinja file)"
        )


def _chat_text(
    tokenizer: Any,
    dicts: Sequence[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    generation: bool,
    src: str,
) -> str:
    try:
        # Text, then `_encode`: apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5,
        # and encoding the text without added special tokens keeps the template's own BOS exactly once.
        text = tokenizer.apply_chat_template(list(dicts), tools=tools, add_generation_prompt=generation, tokenize=False)
    except (TemplateError, ValueError, TypeError) as e:
        raise DataError(f"{src}: the chat template failed on this conversation: {e}") from None
    return str(text)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _require_prefix(prefix: str, text: str, k: int, src: str) -> None:
    if not text.startswith(prefix):
        raise DataError(
            f"{src}: the chat template is not prefix-stable: the rendering of the first {k} messages changes "
            "when later messages are added (some templates rewrite earlier turns, e.g. drop past reasoning), "
            "so assistant turns cannot be located; set model.chat_template to one that keeps past turns as is"
        )


def _answer_labels(answer: list[int], stop: set[int]) -> list[int]:
    """Label an assistant turn up to and including its end-of-turn token.

    What a template puts after that token (a newline before the next turn) is never generated, since
    generation stops at the token, so it stays unlabelled. Without such a token the whole turn is labelled.
    """
    last = max((i for i, t in enumerate(answer) if t in stop), default=len(answer) - 1)
    return answer[: last + 1] + [IGNORE_INDEX] * (len(answer) - last - 1)


def _truncate(ids: list[int], labels: list[int], cutoff_len: int) -> Rendered | None:
    truncated = len(ids) > cutoff_len
    ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return Rendered(ids, labels, truncated)


__all__ = [
    "END_OF_TURN_TOKENS",
    "HERMES",
    "IGNORE_INDEX",
    "TOOL_FORMATS",
    "Rendered",
    "ToolFormat",
    "ToolRendering",
    "answer_ids",
    "call_opening",
    "chat_dicts",
    "end_of_turn_ids",
    "parse_tools",
    "render_conversation",
    "render_prompt",
    "render_text",
    "resolved_tool_format",
    "template_tool_support",
    "tool_rendering",
    "tools_shown",
    "trained_answer_ids",
]
