"""Serving throughput: `python -m tuneforge.bench.serve_bench --model embedded --clients 1,4,16`.

Starts `tuneforge serve` on 127.0.0.1 (a free port) in a child process — the bench layer may not import the
server (DESIGN.md layers), and a separate process keeps the clients' threads off the server's GIL — then, per
client count, sends `--requests` greedy chat requests through that many concurrent clients (httpx) and prints:

- single-stream tokens/s: each request's completion tokens over its own latency, averaged;
- aggregate tokens/s: all completion tokens over the level's wall time;
- mean and max latency, and the CPU model (`lscpu`), the date and the command.

Completion tokens are the server's own `usage.completion_tokens`; a request that ends at its end-of-turn token
before `--max-tokens` counts what it produced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUESTIONS = (
    "What is the capital of France?",
    "Explain what a large language model is in two sentences.",
    "Write a short poem about the sea.",
    "List three uses of Python.",
    "Convert 14 March 2021 to ISO format.",
    "Why is the sky blue?",
    "Give me a recipe for pancakes.",
    "Summarise the plot of Romeo and Juliet.",
)


@dataclass(frozen=True)
class Level:
    clients: int
    requests: int
    tokens: int
    wall_s: float
    single_stream: float  # mean of tokens / latency per request
    latencies: tuple[float, ...]

    @property
    def aggregate(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(source: list[str], port: int, log_file: Path, timeout_s: float = 600.0) -> subprocess.Popen[bytes]:
    """`tuneforge serve` in a child process; returns once /v1/models answers."""
    import httpx

    cmd = [sys.executable, "-m", "tuneforge.cli", "serve", *source, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise SystemExit(f"the server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not answer within {timeout_s:.0f} s (log: {log_file})")


def ask(client: Any, url: str, model: str, question: str, max_tokens: int) -> tuple[int, float]:
    """(completion tokens, latency in seconds) of one greedy chat request."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
    start = time.perf_counter()
    r = client.post(f"{url}/chat/completions", json={**body, "temperature": 0}, timeout=3600)
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"]), time.perf_counter() - start


def run_level(url: str, model: str, clients: int, requests: int, max_tokens: int) -> Level:
    import httpx

    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(requests)]
    with httpx.Client() as client, ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda q: ask(client, url, model, q, max_tokens), questions))
        wall = time.perf_counter() - start
    rates = [n / t for n, t in results if t > 0]
    return Level(
        clients=clients,
        requests=requests,
        tokens=sum(n for n, _ in results),
        wall_s=wall,
        single_stream=statistics.mean(rates) if rates else 0.0,
        latencies=tuple(t for _, t in results),
    )


def table(levels: list[Level]) -> str:
    lines = [
        "| clients | requests | completion tokens | wall time | single-stream tokens/s | aggregate tokens/s "
        "| × one client | mean latency | max latency |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    one = levels[0].aggregate if levels else 0.0
    for lv in levels:
        ratio = f"{lv.aggregate / one:.2f}×" if one else "—"
        lines.append(
            f"| {lv.clients} | {lv.requests} | {lv.tokens} | {lv.wall_s:.1f} s | {lv.single_stream:.1f} "
            f"| {lv.aggregate:.1f} | {ratio} | {statistics.mean(lv.latencies):.1f} s | {max(lv.latencies):.1f} s |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tuneforge.bench.serve_bench", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder (served as `tuneforge serve --run`)")
    src.add_argument("--model", help="a model folder, or 'embedded'")
    p.add_argument("--clients", default="1,4,16", help="comma-separated concurrent client counts")
    p.add_argument("--requests", type=int, default=20, help="requests per client count")
    p.add_argument("--max-tokens", type=int, default=64)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import httpx  # noqa: F401 - the client; installed with the serve extra
    except ImportError:
        raise SystemExit("the serving benchmark needs the serve extra: pip install 'tuneforge[serve]'") from None
    levels_wanted = [int(c) for c in args.clients.split(",") if c.strip()]
    source = ["--run", args.run] if args.run else ["--model", args.model]
    model = Path(args.run).resolve().name if args.run else (Path(args.model).name or args.model)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(source, port, Path(tmp) / "server.log")
        try:
            run_level(url, model, 1, 1, 8)  # a warm-up: the scheduler thread and first-call kernels
            levels = [run_level(url, model, c, args.requests, args.max_tokens) for c in levels_wanted]
        finally:
            server.terminate()
            server.wait(timeout=30)
    command = "python -m tuneforge.bench.serve_bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"date: {dt.date.today().isoformat()}")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(f"command: {command}")
    print(f"server: tuneforge serve {' '.join(source)} (greedy, max_tokens={args.max_tokens})\n")
    print(table(levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
