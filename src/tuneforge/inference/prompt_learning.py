"""PEFT prompt learning (prefix_tuning, p_tuning_v2, prompt_tuning, p_tuning, mpt) in tuneforge's own forward
passes and in `generate`.

PEFT puts an adapter's virtual tokens in front of the text inside `PeftModel.forward` and
`prepare_inputs_for_generation`. Three gaps, measured on transformers 5.25 with peft 0.21.2 (the tests in
tests/test_prompt_learning_inference.py compare against PEFT's own full forward):

1. `PeftModel.generate` drops a prefix: transformers >= 5.24 hands the KV cache to `prepare_inputs_for_generation`
   and the model as `cache`, and peft 0.21.2 still reads and writes `past_key_values`. So PEFT never sees the
   cache: it puts its prefix under `past_key_values` next to transformers' empty `cache`, and the model takes the
   latter ("Both `past_key_values` and `cache` are set ... ignoring deprecated `past_key_values`"): every answer
   is the base model's. For prompt tuning it inserts the virtual tokens again at every decoding step.
   `generate` gives PEFT the cache under both names and hands back what PEFT made under the new one.
2. `PeftModel.forward` with a cache of ours (eval's continuations after their context, the server's decode steps)
   adds a fresh prefix (ignored, the warning above) or inserts the virtual tokens again before the new tokens.
3. Left padding: PEFT drops `position_ids` for the virtual-embedding methods ("Position ids are not supported"),
   so in a left-padded batch the virtual tokens sit before the padding and a padded row's text is further from
   them than it was in training.

`LeadIn.prefill` builds the virtual tokens once, at the first pass over a batch, after each row's padding and with
explicit positions, and every pass runs on the base model; `generate` runs PEFT's own generation for a prefix
(its positions are right) and the base model's from those embeddings otherwise.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

PREFIX_TYPES = ("PREFIX_TUNING", "CARTRIDGE")  # PEFT types whose virtual tokens are key/values in the cache


def cache_keyword(model: Any) -> str:
    """`cache` since transformers 5.24 renamed `past_key_values` (the old name warns until 5.40)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    except (TypeError, ValueError):
        return "past_key_values"


@dataclass(frozen=True)
class LeadIn:
    """What a model's forward passes run on, and the virtual tokens that lead every row (none without prompt
    learning). Call it like the model, with the cache as `cache=` whatever transformers calls it."""

    model: Any  # the PEFT model's base under prompt learning, else the model itself
    peft: Any | None = None  # the PeftModel whose active adapter makes the virtual tokens
    kind: Literal["prefix", "embeds"] | None = None
    width: int = 0  # virtual tokens in front of each row
    cache_kw: str = "cache"

    def __call__(self, **inputs: Any) -> Any:
        if "cache" in inputs and self.cache_kw != "cache":
            inputs[self.cache_kw] = inputs.pop("cache")
        return self.model(**inputs)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
        """The first pass's inputs for left-padded `ids` and `mask`, and the mask with the virtual tokens' columns
        (what later passes extend; its row sums are the next positions). A prefix comes as the `cache`."""
        rows = ids.shape[0]
        if self.kind == "prefix":
            assert self.peft is not None
            full = torch.cat([mask.new_ones(rows, self.width), mask], dim=1)
            positions = (full.cumsum(-1) - 1).clamp(min=0)[:, self.width :]
            inputs = {"input_ids": ids, "cache": self.peft.get_prompt(batch_size=rows)}
        elif self.kind == "embeds":
            assert self.peft is not None
            embeds = self.peft.word_embeddings(ids)
            prompts = self.peft.get_prompt(batch_size=rows).to(embeds.dtype)
            pads = (mask == 0).sum(-1).tolist()
            # each row: its padding, the virtual tokens, its text (PEFT puts them before the padding)
            embeds = torch.stack([torch.cat([e[:p], v, e[p:]]) for e, v, p in zip(embeds, prompts, pads, strict=True)])
            ones = mask.new_ones(self.width)
            full = torch.stack([torch.cat([m[:p], ones, m[p:]]) for m, p in zip(mask, pads, strict=True)])
            positions = (full.cumsum(-1) - 1).clamp(min=0)
            inputs = {"inputs_embeds": embeds}
        else:
            full, positions = mask, (mask.cumsum(-1) - 1).clamp(min=0)
            inputs = {"input_ids": ids}
        return {**inputs, "attention_mask": full, "position_ids": positions}, full


def lead_in(model: Any) -> LeadIn:
    """The `LeadIn` of `model` with its active adapter (a disabled adapter leads with nothing)."""
    config: Any = getattr(model, "active_peft_config", None)
    learning = bool(getattr(config, "is_prompt_learning", False)) and not getattr(model, "_adapters_disabled", False)
    if not learning:
        return LeadIn(model, cache_kw=cache_keyword(model))
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    kind: Literal["prefix", "embeds"] = "prefix" if peft_type in PREFIX_TYPES else "embeds"
    return LeadIn(model.get_base_model(), model, kind, int(config.num_virtual_tokens), cache_keyword(model))


def generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
    """`model.generate` for left-padded rows, with a prompt-learning adapter's virtual tokens where training put
    them; returns the prompt ids followed by the new tokens, as `generate` does."""
    lead = lead_in(model)
    if lead.kind == "embeds":
        inputs, mask = lead.prefill(input_ids, attention_mask)
        # from embeddings transformers returns the new tokens only, and counts positions from the mask
        new = lead.model.generate(inputs_embeds=inputs["inputs_embeds"], attention_mask=mask, **kwargs)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)
    with _peft_sees_cache(model) if lead.kind == "prefix" else contextlib.nullcontext():
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


@contextlib.contextmanager
def _peft_sees_cache(model: Any) -> Iterator[None]:
    """Gap 1 above: in PEFT's `prepare_inputs_for_generation` the cache is also `past_key_values` (what peft 0.21
    reads, and where it puts its prefix), and the prefix goes back to the model as `cache`."""
    base_prepare = model.base_model_prepare_inputs_for_generation
    peft_prepare = model.prepare_inputs_for_generation
    given: dict[str, Any] = {}

    def base_both_names(*args: Any, **kwargs: Any) -> Any:  # `kwargs` by name: generate reads the signature
        out = base_prepare(*args, **kwargs)
        if "cache" in out and "past_key_values" not in out:
            out["past_key_values"] = given["cache"] = out["cache"]
        return out

    def prepare(*args: Any, **kwargs: Any) -> Any:
        given.clear()
        model.base_model_prepare_inputs_for_generation = base_both_names
        try:
            out = peft_prepare(*args, **kwargs)
        finally:
            model.base_model_prepare_inputs_for_generation = base_prepare
        if "cache" in given:
            made = out.pop("past_key_values", None)
            if made is not None and made is not given["cache"]:  # PEFT's prefix, under the old name
                out["cache"] = made
        return out

    own = vars(model).get("prepare_inputs_for_generation")  # set on the instance by PEFT's disable_adapter
    model.prepare_inputs_for_generation = prepare  # PeftModel.generate hands the base model this attribute
    try:
        yield
    finally:
        if own is None:
            del model.prepare_inputs_for_generation
        else:
            model.prepare_inputs_for_generation = own


__all__ = ["LeadIn", "cache_keyword", "generate", "lead_in"]
