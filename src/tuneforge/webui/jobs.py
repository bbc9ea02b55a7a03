"""Workflows started from the web UI run as subprocesses of the same CLI (`python -m tuneforge.cli VERB ...`).

The page never trains in its own process: a job is exactly what a user would type in a terminal, its output is
kept (the last lines in memory, all of it in a log file) and it can be stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from tuneforge.errors import TuneforgeError

MAX_LINES = 400
STOP_GRACE_S = 10.0


def cli_command(verb: str, *args: str) -> list[str]:
    """The command line of a tuneforge verb, run by the interpreter the web UI runs in."""
    return [sys.executable, "-m", "tuneforge.cli", verb, *args]


def _is_progress(line: str) -> bool:
    # tqdm redraws its bar with carriage returns: keep only its latest state in the log view
    return "%|" in line and ("it/s" in line or "s/it" in line or "?it" in line)


class JobBusyError(TuneforgeError, RuntimeError):
    """A job of this kind is already running: the page says so instead of starting a second one."""


class Job:
    """One subprocess with its output collected by a reader thread."""

    def __init__(self, cmd: Sequence[str], log_path: Path, cwd: Path | None = None) -> None:
        self.cmd = list(cmd)
        self.log_path = log_path
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self.started = time.time()
        self.ended: float | None = None
        self.stopped = False
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "1"}
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,  # universal newlines: a tqdm '\r' redraw is a line of its own
            bufsize=1,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, so stop() reaches the workers it starts
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None  # set by Popen(stdout=PIPE)
        with self.log_path.open("w", encoding="utf-8") as log:
            log.write("$ " + " ".join(self.cmd) + "\n")
            for raw in self.proc.stdout:
                line = raw.rstrip("\n")
                if not line.strip():
                    continue
                log.write(line + "\n")
                log.flush()
                if self.lines and _is_progress(line) and _is_progress(self.lines[-1]):
                    self.lines[-1] = line
                else:
                    self.lines.append(line)
        self.proc.wait()
        self.ended = time.time()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None or self._reader.is_alive()

    @property
    def returncode(self) -> int | None:
        return None if self.running else self.proc.returncode

    def text(self) -> str:
        return "\n".join(self.lines)

    def status(self) -> str:
        elapsed = (self.ended or time.time()) - self.started
        if self.running:
            return f"running (pid {self.proc.pid}, {elapsed:.0f} s)"
        if self.stopped:
            return f"stopped after {elapsed:.0f} s"
        code = self.proc.returncode
        return f"finished in {elapsed:.0f} s" if code == 0 else f"failed (exit {code}) after {elapsed:.0f} s"

    def stop(self) -> None:
        """SIGTERM to the job's process group, SIGKILL if it is still there after a grace period."""
        if self.proc.poll() is not None:
            return
        self.stopped = True
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self._reader.join(timeout=5)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout=5)
        return self.proc.returncode


class Jobs:
    """At most one job per kind (train, eval, export): a second start while one runs is refused."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> Job | None:
        return self._jobs.get(kind)

    def start(self, kind: str, cmd: Sequence[str], log_path: Path, cwd: Path | None = None) -> Job:
        with self._lock:
            current = self._jobs.get(kind)
            if current is not None and current.running:
                raise JobBusyError(f"a {kind} job is already running (pid {current.proc.pid}); stop it first")
            job = Job(cmd, log_path, cwd)
            self._jobs[kind] = job
            return job

    def stop_all(self) -> None:
        for job in list(self._jobs.values()):
            job.stop()


__all__ = ["Job", "Jobs", "cli_command"]
