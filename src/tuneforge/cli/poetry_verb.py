"""`tuneforge data poetry SRC... --out DIR [--n TITLES] [--seed S]`: the poetry recipe's files from chinese-poetry
JSON (tuneforge.data.poetry_prepare; docs/recipes/poetry.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELD_OUT_TITLES = 100


def data_poetry(args: argparse.Namespace) -> int:
    from tuneforge.data.poetry_prepare import FILES, prepare_poetry, summary_markdown
    from tuneforge.data.schema import DataError

    usage = "tuneforge data poetry SRC... --out DIR [--n HELD_OUT_TITLES] [--seed SEED]"
    if not args.sources or not args.out:
        raise DataError(f"tuneforge data poetry needs the chinese-poetry files or folders and --out: {usage}")
    n = HELD_OUT_TITLES if args.n is None else args.n
    summary = prepare_poetry([Path(s) for s in args.sources], Path(args.out), held_out=n, seed=args.seed)
    print(summary_markdown(summary), end="")
    print(f"written to {args.out} ({', '.join(FILES)})")
    return 0


__all__ = ["HELD_OUT_TITLES", "data_poetry"]
