"""The `tuneforge` command: one verb per workflow (`verbs.py`), its parser (`parser.py`), shared config loading
(`common.py`); `python -m tuneforge.cli` runs it too (the web UI, benches and launchers start it that way)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tuneforge.cli.common import load_config
from tuneforge.cli.parser import build_parser
from tuneforge.errors import TuneforgeError
from tuneforge.utils.logs import offline_env, setup_logging

# Errors a user can act on: printed as one message, never as a traceback (exit 2). Anything else is a bug in
# tuneforge or a library and shows its traceback (exit 1): a `ValueError` from deep inside torch is not the user's.
USER_ERRORS: tuple[type[BaseException], ...] = (TuneforgeError,)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    offline_env()
    setup_logging(args.verbose)
    from tuneforge.distributed.launch import record_worker_error, worker_main

    try:
        return int(worker_main(args.func)(args))
    except USER_ERRORS as e:
        record_worker_error(e)  # a worker of `--nproc N`: the launching command names this rank's error
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["USER_ERRORS", "build_parser", "load_config", "main"]
