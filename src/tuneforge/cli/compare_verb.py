"""`tuneforge compare CONFIG [key=value ...]`: every arm of the config's `compare:` section on its held-out task
(docs/compare.md); its own module so verbs.py stays one screen per verb."""

from __future__ import annotations

import argparse
import json

from tuneforge.cli.common import load_config


def cmd_compare(args: argparse.Namespace) -> int:
    from tuneforge.compare import run_compare

    extra = list(args.overrides)
    if args.out:
        extra.append(f"compare.out={json.dumps(args.out)}")  # read as YAML: a path stays a string
    outcome = run_compare(load_config(args.config, extra))
    out = outcome.plan.out
    print((out / "compare.md").read_text(encoding="utf-8"), end="")
    more = ", forgetting/" if outcome.plan.general is not None else ""  # compare.forgetting's report
    print(f"written to {out} (compare.md, compare.csv, compare.json, compare.png, runs/{more})")
    return 0 if outcome.ok else 1


__all__ = ["cmd_compare"]
