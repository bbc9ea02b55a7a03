"""Vocabulary extension (the Chinese-LLaMA recipe): learn domain tokens, add them, initialise their embeddings.

A BPE model is trained on the domain corpus with the HF tokenizers library; its learned pieces that the base
tokenizer splits into several tokens are the candidates, single characters included (Chinese-LLaMA adds Chinese
characters as well as words: a byte-level tokenizer spends 2-3 tokens on one), ranked by the tokens they would
save on the corpus (occurrences x (base tokens - 1)). Their input embedding (and the untied lm_head row) starts
as the mean of the sub-token rows they replace, so the extended model first behaves as before instead of
starting from noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

UNK = "[UNK]"  # the BPE model's own unknown token: never a candidate


def learn_tokens(base: Any, texts: Sequence[str], count: int, min_frequency: int = 2) -> list[str]:
    """Up to `count` corpus pieces (words, word parts, characters) the base splits into several tokens, the
    ones saving the most tokens on `texts` first; a piece occurring fewer than `min_frequency` times is left out.

    The saving counts each piece's occurrences on its own (overlapping pieces such as 歌辭 and 雜曲歌辭 both count
    the same text): an estimate for ranking, not the measured gain, which tokens_per_char gives."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    size = len(set("".join(texts))) + 4 * count + 1
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(vocab_size=size, min_frequency=min_frequency, special_tokens=[UNK], show_progress=False),
    )
    known = set(base.get_vocab())
    corpus = "\n".join(texts)
    saving: dict[str, int] = {}
    for piece in bpe.get_vocab():
        if piece == UNK or piece in known or not any(c.isalnum() for c in piece):
            continue
        parts = len(base(piece, add_special_tokens=False)["input_ids"])
        seen = corpus.count(piece) if parts > 1 else 0
        if seen >= min_frequency:
            saving[piece] = seen * (parts - 1)
    return sorted(saving, key=lambda p: (-saving[p], p))[:count]


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
