"""`tuneforge data preview CONFIG [--n N]`: training samples exactly as the model sees them.

For each dataset of the config, the first N samples rendered through the same functions training uses
(render_conversation / render_text, the tokenizer's chat template, data.tool_format and data.max_tools), decoded
token span by token span with the trained (labelled) spans marked: «like this» (or green with `color=True`).
After each sample: its tokens and trained tokens, whether data.cutoff_len cut it (and how many trained tokens
went), whether it is dropped (nothing trained left), and the tools the retriever left out. Preference stages
show the prompt and both answers as the trainer gets them. The first debugging step when a run learns nothing.

`preview(cfg, n, tokenizer)`: the tokenizer is the caller's (data/ may not import models/; the CLI loads it with
`models.loader.load_tokenizer(cfg.model)`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tuneforge.data.build import format_for, read_samples, require_datasets, substitute
from tuneforge.data.formats import format_record
from tuneforge.data.preference import Kind, read_sample
from tuneforge.data.registry import resolve
from tuneforge.data.render import (
    IGNORE_INDEX,
    Rendered,
    parse_tools,
    render_conversation,
    render_prompt,
    render_text,
    resolved_tool_format,
    tools_shown,
)
from tuneforge.data.schema import Conversation, KTOSample, Preference, Text
from tuneforge.data.scrub import scrubber_for
from tuneforge.data.toolschema import tool_names

MARKS = ("«", "»")
ANSI = ("\x1b[32m", "\x1b[0m")
NO_LIMIT = 1 << 30


def preview(cfg: Any, n: int, tokenizer: Any, color: bool = False, data_kind: str = "chat") -> str:
    """The first `n` samples of every dataset in `cfg` (a RunConfig), rendered and marked. `data_kind` is what a
    sample of the config's stage is (the stage table's `data`: chat, text, pairs, kto, prompts)."""
    data, stage = cfg.data, str(getattr(cfg, "stage", "sft"))
    marks = ANSI if color else MARKS
    out = [
        f"stage {stage}, data.cutoff_len={data.cutoff_len}, tool format "
        f"{resolved_tool_format(tokenizer, data.tool_format)} (data.tool_format={data.tool_format}); "
        f"trained tokens are shown {marks[0]}like this{marks[1]}"
    ]
    for spec in require_datasets(data):
        resolved = resolve(spec, data.dataset_dir)
        out.append(f"\n=== dataset {resolved.name} (format {resolved.format}) ===")
        if data_kind in ("pairs", "kto") or resolved.ranking or resolved.kto:
            kind: Kind = "kto" if resolved.kto or data_kind == "kto" else "pairs"
            pairs = read_samples(
                resolved,
                lambda src, rec: read_sample(resolved, kind, rec, src),  # noqa: B023
                n,
                scrubber_for(data),
            )
            out += [_preference(tokenizer, s, data) for s in pairs]
            continue
        fmt, fspec = format_for(resolved, "text" if data_kind == "text" else "sft")
        samples = read_samples(
            resolved,
            lambda src, rec: substitute(format_record(fmt, rec, fspec, src), data.variables),  # noqa: B023
            n,
            scrubber_for(data),  # data.scrub: shown as the model sees it
        )
        out += [_sample(tokenizer, s, data, marks) for s in samples]
    return "\n".join(out) + "\n"


def _sample(tokenizer: Any, sample: Any, data: Any, marks: tuple[str, str]) -> str:
    head = f"--- {sample.source}"
    if isinstance(sample, Text):
        full: Rendered | None = render_text(tokenizer, sample, NO_LIMIT)
        cut: Rendered | None = render_text(tokenizer, sample, data.cutoff_len)
    else:
        assert isinstance(sample, Conversation)  # format_for gave a chat format
        args = (data.train_on_prompt, data.tool_format, data.max_tools)
        full = render_conversation(tokenizer, sample, NO_LIMIT, *args)
        cut = render_conversation(tokenizer, sample, data.cutoff_len, *args)
        head += _tools_note(tokenizer, sample, data)
    if full is None:
        return f"{head}\nDROPPED: no trained token in this sample"
    shown = cut if cut is not None else Rendered(full.input_ids[: data.cutoff_len], full.labels[: data.cutoff_len])
    lines = [head, marked(tokenizer, shown.input_ids, shown.labels, marks)]
    lost = len(full.input_ids) - len(shown.input_ids)
    lines.append(f"[{len(shown.input_ids)} tokens, {shown.label_tokens} trained]")
    if lost:
        gone = full.label_tokens - shown.label_tokens
        lines.append(f"TRUNCATED at data.cutoff_len={data.cutoff_len}: {lost} tokens cut, {gone} of them trained")
    if cut is None:
        lines.append("DROPPED: no trained token is left within data.cutoff_len (the sample is skipped in training)")
    return "\n".join(lines)


def _tools_note(tokenizer: Any, sample: Conversation, data: Any) -> str:
    schemas = parse_tools(sample.tools, sample.source)
    if not schemas:
        return ""
    offered = tool_names(schemas)
    note = f" ({len(offered)} tool{'s' if len(offered) != 1 else ''} offered"
    if data.max_tools is not None and len(offered) > data.max_tools:
        names = tool_names(tools_shown(schemas, sample.messages, data.max_tools))
        note += f"; data.max_tools={data.max_tools} kept {', '.join(names)}; left out: "
        note += ", ".join(n for n in offered if n not in names)
    return note + ")"


def marked(tokenizer: Any, ids: Sequence[int], labels: Sequence[int], marks: tuple[str, str]) -> str:
    """The decoded text with each run of labelled tokens between `marks`."""
    parts, run, trained = [], [], None
    for tid, label in zip(ids, labels, strict=True):
        now = label != IGNORE_INDEX
        if trained is not None and now != trained:
            parts.append(_piece(tokenizer, run, trained, marks))
            run = []
        run.append(tid)
        trained = now
    if run:
        parts.append(_piece(tokenizer, run, bool(trained), marks))
    return "".join(parts)


def _piece(tokenizer: Any, ids: list[int], trained: bool, marks: tuple[str, str]) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return f"{marks[0]}{text}{marks[1]}" if trained else text


def _preference(tokenizer: Any, sample: Preference | KTOSample, data: Any) -> str:
    prompt = tokenizer.decode(render_prompt(tokenizer, sample.prompt, None, data.tool_format))
    if isinstance(sample, KTOSample):
        tag = "desirable" if sample.desirable else "undesirable"
        return f"--- {sample.source}\n{prompt}\n[completion, {tag}] {json.dumps(sample.completion, ensure_ascii=False)}"
    return (
        f"--- {sample.source}\n{prompt}\n[chosen] {json.dumps(sample.chosen, ensure_ascii=False)}\n"
        f"[rejected] {json.dumps(sample.rejected, ensure_ascii=False)}"
    )


__all__ = ["marked", "preview"]
