"""Ollama Modelfiles for GGUF exports: FROM (and ADAPTER), the chat template in Go-template form, stops, system.

Ollama does not run Jinja, so the tokenizer's chat template is translated. Rather than parsing Jinja, the template
is *rendered* with sentinel messages and cut into the text around each role's content (prefix / suffix), the
generation prompt and a default system prompt; the pieces are then put back together as a Go template and checked
by re-rendering a conversation both ways. Templates that cannot be cut this way (content rewritten, turns that
depend on more than the role) raise TemplateError; `write_modelfile` then leaves TEMPLATE out (Ollama falls back to
the chat template stored in the GGUF file) and says so in the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.render import end_of_turn_ids
from tuneforge.errors import TuneforgeError

SENTINELS = {"system": "SYSQ7f3a", "user": "USRQ1b2c", "assistant": "ASTQ9d4e"}
SECOND_USER = "USRQ5e6f"
ROLES = ("system", "user", "assistant")


class TemplateError(TuneforgeError, ValueError):
    pass


@dataclass(frozen=True)
class ChatPieces:
    """A chat template cut at the messages' content: text before / after each role's content."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str
    default_system: str | None


def _render(tokenizer: Any, messages: Sequence[tuple[str, str]], generation: bool) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in messages], tokenize=False, add_generation_prompt=generation
    )
    bos = getattr(tokenizer, "bos_token", None)
    # llama.cpp adds BOS itself (tokenizer.ggml.add_bos_token); a template that writes bos_token would double it
    writes_bos = "bos_token" in str(getattr(tokenizer, "chat_template", "") or "")
    return str(text)[len(bos) :] if writes_bos and bos and str(text).startswith(bos) else str(text)


def _split(text: str, marker: str, what: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise TemplateError(f"the chat template does not copy the {what} content as it is")
    before, _, after = text.partition(marker)
    return before, after


def chat_pieces(tokenizer: Any) -> ChatPieces:
    """Cut the tokenizer's chat template into per-role prefix/suffix text (TemplateError if it cannot be)."""
    s, u, a, u2 = SENTINELS["system"], SENTINELS["user"], SENTINELS["assistant"], SECOND_USER
    full = _render(tokenizer, [("system", s), ("user", u), ("assistant", a), ("user", u2)], False)
    sys_prefix, rest = _split(full, s, "system")
    between_su, rest = _split(rest, u, "user")
    user_suffix_asst_prefix, rest = _split(rest, a, "assistant")
    asst_suffix_user_prefix, user_suffix = _split(rest, u2, "second user")
    with_prompt = _render(tokenizer, [("system", s), ("user", u)], True)
    without = _render(tokenizer, [("system", s), ("user", u)], False)
    if not with_prompt.startswith(without) or not full.startswith(without):
        raise TemplateError("the chat template's turns are not appended one after the other")
    generation_prompt = with_prompt[len(without) :]
    asst_prefix = generation_prompt
    if user_suffix_asst_prefix != user_suffix + asst_prefix:
        raise TemplateError("the assistant turn does not start with the template's generation prompt")
    # Between two turns the template writes suffix + prefix; where one ends and the next begins is cut the way
    # the last user turn ends (its suffix is known: nothing follows it).
    if between_su.startswith(user_suffix) and asst_suffix_user_prefix.startswith(user_suffix):
        user_prefix = between_su[len(user_suffix) :]
    else:
        user_prefix = _common_tail(between_su, asst_suffix_user_prefix)
    if not (between_su.endswith(user_prefix) and asst_suffix_user_prefix.endswith(user_prefix)):
        raise TemplateError("user turns are not wrapped the same way each time")
    sys_suffix = between_su[: len(between_su) - len(user_prefix)]
    asst_suffix = asst_suffix_user_prefix[: len(asst_suffix_user_prefix) - len(user_prefix)]
    pieces = ChatPieces(
        prefix={"system": sys_prefix, "user": user_prefix, "assistant": asst_prefix},
        suffix={"system": sys_suffix, "user": user_suffix, "assistant": asst_suffix},
        generation_prompt=generation_prompt,
        default_system=_default_system(tokenizer, sys_prefix, sys_suffix, user_prefix),
    )
    _check(tokenizer, pieces)
    return pieces


def _common_tail(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n :]


def _default_system(tokenizer: Any, sys_prefix: str, sys_suffix: str, user_prefix: str) -> str | None:
    """The system prompt the template adds by itself when a chat has none (SmolLM2's 'You are a helpful ...')."""
    text = _render(tokenizer, [("user", SENTINELS["user"])], False)
    head = text.partition(SENTINELS["user"])[0]
    if head == user_prefix:
        return None
    if not (head.startswith(sys_prefix) and head.endswith(sys_suffix + user_prefix)):
        raise TemplateError("the template adds text before the first user turn that is not a system turn")
    return head[len(sys_prefix) : len(head) - len(sys_suffix + user_prefix)]


def _apply(pieces: ChatPieces, messages: Sequence[tuple[str, str]], generation: bool) -> str:
    if messages and messages[0][0] != "system" and pieces.default_system is not None:
        messages = [("system", pieces.default_system), *messages]
    text = "".join(pieces.prefix[r] + c + pieces.suffix[r] for r, c in messages)
    return text + (pieces.generation_prompt if generation else "")


def _check(tokenizer: Any, pieces: ChatPieces) -> None:
    chats = [
        [("user", "hi"), ("assistant", "hello"), ("user", "how are you?")],
        [("system", "be brief"), ("user", "2+2?"), ("assistant", "4"), ("user", "and 3+3?")],
    ]
    for chat in chats:
        for generation in (True, False):
            if _apply(pieces, chat, generation) != _render(tokenizer, chat, generation):
                raise TemplateError("the translated template does not reproduce the chat template on a test chat")


def _go_text(text: str) -> str:
    if "{{" in text or "}}" in text:
        raise TemplateError("the chat template's text contains '{{' or '}}', which Go templates cannot hold as is")
    return text


def go_template(pieces: ChatPieces) -> str:
    """Ollama's TEMPLATE: each message wrapped by its role's text, then the generation prompt after the last.

    One line, no whitespace-trimming actions: every character outside the actions is the chat template's own.
    """
    branches = "".join(
        ("{{ if" if i == 0 else "{{ else if")
        + f' eq .Role "{role}" }}}}'
        + _go_text(pieces.prefix[role])
        + "{{ .Content }}"
        + _go_text(pieces.suffix[role])
        for i, role in enumerate(ROLES)
    )
    return (
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        + branches
        + "{{ end }}"
        + '{{ if and $last (ne .Role "assistant") }}'
        + _go_text(pieces.generation_prompt)
        + "{{ end }}{{ end }}"
    )


def stop_tokens(tokenizer: Any) -> list[str]:
    return sorted({str(tokenizer.convert_ids_to_tokens(i)) for i in end_of_turn_ids(tokenizer)})


def _quote(text: str) -> str:
    if '"""' in text:
        raise TemplateError('text contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile_text(tokenizer: Any, model_from: str, adapter: str | None = None) -> tuple[str, str | None]:
    """The Modelfile and, when the template could not be translated, the reason (TEMPLATE is then left out)."""
    lines = [f"# written by tuneforge export; ollama create NAME -f {'Modelfile'}", f"FROM {model_from}"]
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    problem = None
    try:
        pieces = chat_pieces(tokenizer)
        lines.append(f"TEMPLATE {_quote(go_template(pieces))}")
        if pieces.default_system is not None:
            lines.append(f"SYSTEM {_quote(pieces.default_system)}")
    except TemplateError as e:
        problem = str(e)
        lines.append(f"# no TEMPLATE: {problem}; Ollama uses the chat template stored in the GGUF file")
    lines += [f"PARAMETER stop {json.dumps(t)}" for t in stop_tokens(tokenizer)]
    return "\n".join(lines) + "\n", problem


def write_modelfile(folder: Path, tokenizer: Any, model_from: str, adapter: str | None = None) -> Path:
    text, problem = modelfile_text(tokenizer, model_from, adapter)
    path = folder / "Modelfile"
    path.write_text(text, encoding="utf-8")
    if problem:
        import logging

        logging.getLogger("tuneforge.export").warning("Modelfile without TEMPLATE: %s", problem)
    return path


__all__ = [
    "ChatPieces",
    "TemplateError",
    "chat_pieces",
    "go_template",
    "modelfile_text",
    "stop_tokens",
    "write_modelfile",
]
