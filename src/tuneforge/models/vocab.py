"""Vocabulary extension (the Chinese-LLaMA recipe): learn domain tokens, add them, initialise their embeddings.

A BPE model is trained on the domain corpus with the HF tokenizers library; its learned pieces that the base
tokenizer splits into several tokens become new tokens of the base tokenizer. Their input embedding (and the
untied lm_head row) starts as the mean of the sub-token rows they replace, so the extended model first
behaves as before instead of starting from noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def learn_tokens(base: Any, texts: Sequence[str], count: int, min_frequency: int = 2) -> list[str]:
    """Up to `count` frequent corpus pieces (whole words or word parts, >= 2 characters) the base splits."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    size = len(set("".join(texts))) + 4 * count + 1
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=size, min_frequency=min_frequency, special_tokens=["[UNK]"], show_progress=False
        ),
    )
    learned = sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])  # merge order: more frequent pieces first
    known = set(base.get_vocab())
    picked: list[str] = []
    for piece, _ in learned:
        if len(piece) < 2 or piece in known or not any(c.isalnum() for c in piece):
            continue
        if len(base(piece, add_special_tokens=False)["input_ids"]) > 1:
            picked.append(piece)
    picked = sorted(picked, key=lambda p: -len(p))[:count]  # longest first: they save the most tokens
    return picked


def tokens_per_char(tokenizer: Any, texts: Sequence[str]) -> float:
    chars = sum(len(t) for t in texts)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return round(tokens / max(chars, 1), 4)


def init_new_embeddings(model: Any, base_tokenizer: Any, added: Sequence[str], tokenizer: Any) -> None:
    """Rows of the added tokens = mean of the rows of the base sub-tokens (input embedding and untied lm_head)."""
    model.resize_token_embeddings(len(tokenizer))
    tables = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not tables[0]:
        tables.append(head.weight)
    with torch.no_grad():
        for piece in added:
            new_id = tokenizer.convert_tokens_to_ids(piece)
            parts = base_tokenizer(piece, add_special_tokens=False)["input_ids"]
            for table in tables:
                table[new_id] = table[parts].mean(dim=0)
