"""Sampling settings of one generation, shared by the engine's direct calls and the batch scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.data.render import end_of_turn_ids


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def kwargs(self, tokenizer: Any) -> dict[str, Any]:
        sample = self.temperature > 0
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sample,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": sorted(end_of_turn_ids(tokenizer)),
        }
        if sample:
            out.update(temperature=self.temperature, top_p=self.top_p)
        else:  # silence "temperature is set but do_sample=False" from generation configs of chat models
            out.update(temperature=None, top_p=None, top_k=None)
        return out
