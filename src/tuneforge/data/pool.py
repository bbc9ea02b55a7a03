"""The training split as conversations, untokenized: what few-shot prompts draw their solved examples from.

The same steps as training (build.py's resolve → read → mix → split, seeded by data.seed), so the pool is the
training split a run of the same config trains on, the validation split left out; each distinct sample once.
"""

from __future__ import annotations

from tuneforge.config import DataConfig
from tuneforge.data.build import _format_for, mix, read_samples, require_datasets, split, substitute
from tuneforge.data.formats import format_record
from tuneforge.data.registry import resolve
from tuneforge.data.schema import Conversation, DataError
from tuneforge.data.scrub import scrubber_for


def train_conversations(cfg: DataConfig) -> list[Conversation]:
    """The distinct samples of the training split, in the mixed order, each a Conversation ending in its answer."""
    loaded: list[list[Conversation]] = []
    scrubber = scrubber_for(cfg)
    for spec in require_datasets(cfg):
        resolved = resolve(spec, cfg.dataset_dir)
        fmt, fspec = _format_for(resolved, "sft")

        def to_sample(src: str, rec: dict, fmt: str = fmt, fspec: object = fspec) -> Conversation:
            sample = substitute(format_record(fmt, rec, fspec, src), cfg.variables)  # type: ignore[arg-type]
            assert isinstance(sample, Conversation)  # _format_for("sft") picked a chat format
            return sample

        loaded.append(read_samples(resolved, to_sample, spec.max_samples, scrubber))
    _, pool = mix([range(len(s)) for s in loaded], [s.ratio for s in cfg.datasets], cfg)
    train_keys, _ = split(pool, cfg.val_size)
    out = [loaded[d][r] for d, r in dict.fromkeys(train_keys)]
    bad = next((c for c in out if not c.messages or c.messages[-1].role != "assistant"), None)
    if bad is not None:
        raise DataError(f"{bad.source}: a training sample must end with an assistant answer to be a solved example")
    return out


__all__ = ["train_conversations"]
