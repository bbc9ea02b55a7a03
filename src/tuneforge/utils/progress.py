"""One progress bar for every long phase (probes, generation, scoring, indexing), not only training.

tqdm writes to stderr and redraws in place on a terminal; in a log (the web UI's job output, CI) it prints a
line per update at most every few seconds, so a phase that runs minutes is never silent.
"""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or total == 0, leave=False, mininterval=2.0)
