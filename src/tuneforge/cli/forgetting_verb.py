"""`tuneforge forgetting RUN [RUN ...]`: the runs' base and each run on general benchmarks, before and after, next
to the target task's gain (docs/eval.md, "Forgetting report"); its own module so verbs.py stays one screen per verb."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuneforge.cli.common import load_config

# The general benchmarks when --general is not given: the shipped examples/forgetting.yaml.
DEFAULT_GENERAL = Path(__file__).resolve().parents[1] / "examples" / "forgetting.yaml"


def cmd_forgetting(args: argparse.Namespace) -> int:
    from tuneforge.eval.forgetting import forgetting_report
    from tuneforge.eval.forgetting_render import markdown

    general = load_config(args.general or DEFAULT_GENERAL, [])
    target = load_config(args.target, []) if args.target else None
    report = forgetting_report(general, args.runs, target, args.output, args.limit)
    print(markdown(report), end="")
    files = "forgetting.md, forgetting.json, forgetting.png; general/ and target/ eval reports"
    print(f"written to {report.folder} ({files})")
    return 0


__all__ = ["DEFAULT_GENERAL", "cmd_forgetting"]
