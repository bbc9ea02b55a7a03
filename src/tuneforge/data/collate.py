"""Padding-free batches with capped rows.

transformers' DataCollatorWithFlattening puts a whole batch into one row. On a CPU, attention over that row
computes the full (rows x rows) square under a block-diagonal mask, so a long row costs more than the padding
it saves. This collator fills the batch's samples into rows of at most `max_tokens` tokens (first-fit
decreasing) and pads only the rows' ends. Like the flattening collator it emits position ids restarting at 0
per sample and no attention mask: transformers detects the sample boundaries from the position ids and keeps
attention inside each sample. Each padding run is a sequence of its own (positions from 0, label -100), so
it neither sees nor is seen by a real token. The rows are chosen for the fewest computed tokens: one
long row plus a short one padded to its length can cost more than plain padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class PackedRowsCollator:
    def __init__(self, max_tokens: int, pad_token_id: int) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.max_tokens = max_tokens
        self.pad_token_id = pad_token_id

    def rows(self, lengths: Sequence[int]) -> list[list[int]]:
        """Sample indices per row, for the fewest computed tokens (rows x longest row).

        Rows of the longest sample's width hold short samples side by side; wider rows (up to max_tokens)
        can hold more. Each candidate width is filled first-fit decreasing, and the cheapest wins (on a tie,
        the narrower one: attention cost grows with the square of a row's length). A sample longer than
        max_tokens gets a row of its own.
        """
        longest, total = max(lengths), sum(lengths)
        widths = {longest} | {max(longest, min(self.max_tokens, -(-total // k))) for k in range(1, len(lengths) + 1)}
        best: tuple[int, int, list[list[int]]] | None = None
        for width in sorted(widths):
            rows = _first_fit_decreasing(lengths, width)
            cost = len(rows) * max(sum(lengths[i] for i in row) for row in rows)
            if best is None or cost < best[0]:
                best = (cost, width, rows)
        assert best is not None  # widths is never empty
        return best[2]

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.pack(features, self.rows([len(f["input_ids"]) for f in features]))

    def pack(self, features: Sequence[dict[str, Any]], layout: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """The batch tensors for a given layout (sample indices per row)."""
        lengths = [len(f["input_ids"]) for f in features]
        ids: list[list[int]] = []
        labels: list[list[int]] = []
        positions: list[list[int]] = []
        for row in layout:
            r_ids: list[int] = []
            r_labels: list[int] = []
            r_pos: list[int] = []
            for i in row:
                f = features[i]
                r_ids += list(f["input_ids"])
                # A sample's first label would be predicted from the previous sample's last token: masked,
                # as DataCollatorWithFlattening does (it is never a trained label in a row of its own either).
                r_labels += [-100, *list(f["labels"])[1:]]
                r_pos += list(range(lengths[i]))
            ids.append(r_ids)
            labels.append(r_labels)
            positions.append(r_pos)
        width = max(len(r) for r in ids)
        for r_ids, r_labels, r_pos in zip(ids, labels, positions, strict=True):
            pad = width - len(r_ids)
            r_ids += [self.pad_token_id] * pad
            r_labels += [-100] * pad
            r_pos += list(range(pad))
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
        }


def pad_id(tokenizer: Any) -> int:
    """The id padding runs are filled with: the tokenizer's pad token, else its EOS."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


def _first_fit_decreasing(lengths: Sequence[int], width: int) -> list[list[int]]:
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


__all__ = ["PackedRowsCollator", "pad_id"]
