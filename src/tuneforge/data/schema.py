"""The one internal sample shape every format is converted to, and the error every bad input raises.

Formats (formats.py) turn file records into these; rendering (render.py) turns them into token ids. Nothing
downstream of formats.py looks at raw records, so a new file layout only needs a new FORMATS entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tuneforge.errors import TuneforgeError

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)


class DataError(TuneforgeError, ValueError):
    """Bad input data; the message names the file, the row or line, and the key or value at fault."""


@dataclass(frozen=True)
class Message:
    """One turn. Tool calls are part of an assistant's `content`, as data.toolcalls.render_calls writes them.

    `trained=False` keeps an assistant turn out of the loss (LLaMA-Factory's per-message `loss_weight: 0`).
    """

    role: Role
    content: str
    trained: bool = True

    def __post_init__(self) -> None:
        # Messages are also built by the chat and serving code from user input, so check here once.
        if self.role not in ROLES:
            raise DataError(f"message role {self.role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(self.content, str):
            raise DataError(f"message content must be text, got {type(self.content).__name__}: {self.content!r}")


@dataclass(frozen=True)
class Conversation:
    """A chat sample. `tools` is the JSON text of the tool schemas offered to the model, if any."""

    messages: tuple[Message, ...]
    tools: str | None = None
    source: str = ""  # "file:line" or "file:row N", for error messages


@dataclass(frozen=True)
class Text:
    """A plain-text sample for pre-training: every token is trained on."""

    text: str
    source: str = ""


@dataclass(frozen=True)
class Preference:
    """A ranked pair: the prompt messages (ending with a user turn), then the chosen and rejected answers."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    source: str = ""


@dataclass(frozen=True)
class KTOSample:
    """An unpaired example for KTO: prompt messages, one answer, and whether the answer is desirable."""

    prompt: tuple[Message, ...]
    completion: str
    desirable: bool
    source: str = ""


Sample = Conversation | Text | Preference  # Preference: only the `preference` format makes these

__all__ = ["ROLES", "Conversation", "DataError", "KTOSample", "Message", "Preference", "Role", "Sample", "Text"]
