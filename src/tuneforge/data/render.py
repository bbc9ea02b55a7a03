"""Samples -> token ids and labels, through the tokenizer's own chat template.

The same functions render training data and chat prompts, so a model is asked exactly the way it was
trained. Assistant turns are found by prefix difference: the text of messages[:k] with the generation prompt
is a prefix of the text of messages[:k+1], and what lies between is the assistant's turn. This works for any
template that renders earlier turns unchanged, without per-model tables of role markers (transformers'
`{% generation %}` masks would do the same, but few shipped templates have them).

Each piece between boundaries is tokenized on its own, so the tokens before an assistant turn are exactly
`render_prompt`'s tokens for that prefix: what the model sees at inference time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from tuneforge.data.schema import Conversation, DataError, Message, Text

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


def render_prompt(tokenizer: Any, messages: Sequence[Message], tools: str | None = None) -> list[int]:
    """Token ids of a chat prompt, ending with the template's assistant header (generation prompt)."""
    _require_template(tokenizer)
    return _encode(tokenizer, _chat_text(tokenizer, messages, parse_tools(tools), True, "prompt"))


def render_conversation(
    tokenizer: Any, conv: Conversation, cutoff_len: int, train_on_prompt: bool = False
) -> Rendered | None:
    """input_ids and labels for a chat; labels are IGNORE_INDEX except on assistant turns.

    Keeps the first `cutoff_len` tokens; returns None when no labelled token survives (the caller counts it).
    """
    _require_template(tokenizer)
    msgs, tools, src = conv.messages, parse_tools(conv.tools, conv.source), conv.source
    stop = end_of_turn_ids(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    done = ""  # template text already turned into ids
    for k, message in enumerate(msgs):
        if message.role != "assistant":
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
        labels += [IGNORE_INDEX] * len(head) + _answer_labels(answer, stop)
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
    messages: Sequence[Message],
    tools: list[dict[str, Any]] | None,
    generation: bool,
    src: str,
) -> str:
    dicts = [{"role": m.role, "content": m.content} for m in messages]
    try:
        # Text, then `_encode`: apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5,
        # and encoding the text without added special tokens keeps the template's own BOS exactly once.
        text = tokenizer.apply_chat_template(dicts, tools=tools, add_generation_prompt=generation, tokenize=False)
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
    "IGNORE_INDEX",
    "Rendered",
    "end_of_turn_ids",
    "parse_tools",
    "render_conversation",
    "render_prompt",
    "render_text",
]
