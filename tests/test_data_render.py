"""Golden rendering and masking tests on the ChatML and Llama-3 tiny tokenizers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.tiny import CHATML_TEMPLATE, build_tokenizer
from tuneforge.data.render import (
    IGNORE_INDEX,
    parse_tools,
    render_conversation,
    render_prompt,
    render_text,
)
from tuneforge.data.schema import Conversation, DataError, Message, Text

CHAT = Conversation(
    (
        Message("system", "You are X."),
        Message("user", "Who are you?"),
        Message("assistant", "I am X."),
        Message("user", "Who made you?"),
        Message("assistant", "The team made me."),
    ),
    source="chat.jsonl:1",
)
TOOL_CHAT = Conversation(
    (
        Message("user", "Weather in Oslo?"),
        Message("assistant", '{"name": "weather", "arguments": {"city": "Oslo"}}'),
        Message("tool", '{"sky": "rain"}'),
        Message("assistant", "It rains."),
    ),
    source="tools.json:row 2",
)

CHATML_TEXT = (
    "<|im_start|>system\nYou are X.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"
    "<|im_start|>assistant\nI am X.<|im_end|>\n<|im_start|>user\nWho made you?<|im_end|>\n"
    "<|im_start|>assistant\nThe team made me.<|im_end|>\n"
)
LLAMA3_TEXT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are X.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nI am X.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWho made you?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nThe team made me.<|eot_id|>"
)


def spans(tok: Any, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of labelled tokens, checking each label equals its input id."""
    out, run = [], []
    for i, label in zip(ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if run:
                out.append(tok.decode(run))
            run = []
        else:
            assert label == i
            run.append(i)
    return [*out, tok.decode(run)] if run else out


def test_chatml_golden(chatml_tokenizer: Any) -> None:
    r = render_conversation(chatml_tokenizer, CHAT, 1024)
    assert r is not None and not r.truncated
    assert chatml_tokenizer.decode(r.input_ids) == CHATML_TEXT
    assert spans(chatml_tokenizer, r.input_ids, r.labels) == ["I am X.<|im_end|>", "The team made me.<|im_end|>"]
    first = next(i for i, label in enumerate(r.labels) if label != IGNORE_INDEX)
    assert chatml_tokenizer.decode(r.input_ids[:first]) == (
        "<|im_start|>system\nYou are X.<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert r.labels[-1] == IGNORE_INDEX  # the "\n" after <|im_end|> is template glue, never generated
    assert r.attention_mask == [1] * len(r.input_ids)


def test_llama3_golden(llama3_tokenizer: Any) -> None:
    r = render_conversation(llama3_tokenizer, CHAT, 1024)
    assert r is not None
    assert llama3_tokenizer.decode(r.input_ids) == LLAMA3_TEXT
    assert spans(llama3_tokenizer, r.input_ids, r.labels) == ["I am X.<|eot_id|>", "The team made me.<|eot_id|>"]
    bos = llama3_tokenizer.bos_token_id
    assert r.input_ids[0] == bos and r.input_ids.count(bos) == 1
    first = next(i for i, label in enumerate(r.labels) if label != IGNORE_INDEX)
    assert llama3_tokenizer.decode(r.input_ids[:first]) == LLAMA3_TEXT[: LLAMA3_TEXT.index("I am X.")]


def test_label_counts_are_exact(any_tokenizer: Any) -> None:
    r = render_conversation(any_tokenizer, CHAT, 1024)
    assert r is not None
    answer_tokens = sum(
        len(any_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ("I am X.", "The team made me.")
    )
    assert r.label_tokens == answer_tokens + 2  # plus one end-of-turn token per assistant turn


def test_tool_and_function_call_turns(any_tokenizer: Any) -> None:
    r = render_conversation(any_tokenizer, TOOL_CHAT, 1024)
    assert r is not None
    end = "<|im_end|>" if "im_start" in any_tokenizer.chat_template else "<|eot_id|>"
    assert spans(any_tokenizer, r.input_ids, r.labels) == [
        '{"name": "weather", "arguments": {"city": "Oslo"}}' + end,
        "It rains." + end,
    ]
    text = any_tokenizer.decode(r.input_ids)
    assert ("<|im_start|>tool\n" in text) or ("<|start_header_id|>tool<|end_header_id|>" in text)


def test_prompt_tokens_equal_render_prompt_and_the_library(any_tokenizer: Any) -> None:
    messages = CHAT.messages[:2]
    prompt = render_prompt(any_tokenizer, messages)
    dicts = [{"role": m.role, "content": m.content} for m in messages]
    assert prompt == any_tokenizer.apply_chat_template(
        dicts, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    r = render_conversation(any_tokenizer, CHAT, 1024)
    assert r is not None and r.input_ids[: len(prompt)] == prompt  # training sees exactly the chat prompt
    assert set(r.labels[: len(prompt)]) == {IGNORE_INDEX}
    later = render_prompt(any_tokenizer, CHAT.messages[:4])
    assert r.input_ids[: len(later)] == later


def test_truncation_keeps_the_beginning(chatml_tokenizer: Any) -> None:
    full = render_conversation(chatml_tokenizer, CHAT, 1024)
    assert full is not None
    second = len(render_prompt(chatml_tokenizer, CHAT.messages[:4]))
    cut = render_conversation(chatml_tokenizer, CHAT, second + 2)
    assert cut is not None and cut.truncated
    assert (cut.input_ids, cut.labels) == (full.input_ids[: second + 2], full.labels[: second + 2])
    assert spans(chatml_tokenizer, cut.input_ids, cut.labels) == [
        "I am X.<|im_end|>",
        "The t",
    ]  # tiny vocab: "The", " t", "eam"


def test_nothing_labelled_after_truncation_gives_none(any_tokenizer: Any) -> None:
    first_answer = len(render_prompt(any_tokenizer, CHAT.messages[:2]))
    assert render_conversation(any_tokenizer, CHAT, first_answer) is None
    assert render_conversation(any_tokenizer, CHAT, first_answer + 1) is not None


def test_train_on_prompt_labels_everything(chatml_tokenizer: Any) -> None:
    r = render_conversation(chatml_tokenizer, CHAT, 1024, train_on_prompt=True)
    assert r is not None and r.labels == r.input_ids


def test_tools_reach_the_template_in_the_function_form() -> None:
    tok = build_tokenizer("chatml")
    tok.chat_template = "{% if tools %}{{ 'TOOLS ' + (tools | tojson) + '\\n' }}{% endif %}" + CHATML_TEMPLATE
    bare = '[{"name": "weather", "parameters": {}}]'
    text = tok.decode(render_prompt(tok, [Message("user", "Hi")], bare))
    assert text.startswith('TOOLS [{"type": "function", "function": {"name": "weather", "parameters": {}}}]\n')
    r = render_conversation(tok, Conversation(TOOL_CHAT.messages, bare, "t:1"), 1024)
    assert r is not None and tok.decode(r.input_ids).startswith("TOOLS [")
    assert spans(tok, r.input_ids, r.labels)[-1] == "It rains.<|im_end|>"


def test_parse_tools() -> None:
    wrapped = [{"type": "function", "function": {"name": "a"}}]
    assert parse_tools('{"name": "a"}') == wrapped
    assert parse_tools('[{"type": "function", "function": {"name": "a"}}]') == wrapped
    assert parse_tools("[]") is None and parse_tools(None) is None
    with pytest.raises(DataError, match=r"^x:1: tools are not valid JSON"):
        parse_tools("[{", "x:1")
    with pytest.raises(DataError, match="tools must be a JSON list of tool schemas"):
        parse_tools('["a"]')


def test_tokenizer_without_chat_template(chatml_tokenizer: Any) -> None:
    chatml_tokenizer.chat_template = None
    with pytest.raises(DataError, match=r"has no chat template.*set model\.chat_template"):
        render_conversation(chatml_tokenizer, CHAT, 1024)
    with pytest.raises(DataError, match="has no chat template"):
        render_prompt(chatml_tokenizer, CHAT.messages[:2])


def test_template_that_rewrites_earlier_turns_is_refused(chatml_tokenizer: Any) -> None:
    # marks the last message, so adding a message changes the rendering of the one before
    chatml_tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(DataError, match=r"^chat\.jsonl:1: the chat template is not prefix-stable"):
        render_conversation(chatml_tokenizer, CHAT, 1024)


def test_template_errors_name_the_source(chatml_tokenizer: Any) -> None:
    chatml_tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(DataError, match=r"^tools\.json:row 2: the chat template failed.*roles must alternate"):
        render_conversation(chatml_tokenizer, TOOL_CHAT, 1024)


def test_render_text_labels_every_token_and_appends_eos(any_tokenizer: Any) -> None:
    ids = any_tokenizer("The quick brown fox.")["input_ids"] + [any_tokenizer.eos_token_id]
    r = render_text(any_tokenizer, Text("The quick brown fox."), 1024)
    assert (r.input_ids, r.labels, r.truncated) == (ids, ids, False)
    short = render_text(any_tokenizer, Text("The quick brown fox."), 3)
    assert (short.input_ids, short.labels, short.truncated) == (ids[:3], ids[:3], True)


def test_message_roles_are_checked() -> None:
    with pytest.raises(DataError, match="message role 'bot' is not one of system, user, assistant, tool"):
        Message("bot", "hi")  # type: ignore[arg-type]
