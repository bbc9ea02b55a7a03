"""`tuneforge train CONFIG --nproc N [--nnodes M --node-rank R --master ADDR:PORT]`: the same command again in N
processes per machine, started by torchrun's own API (torch.distributed.run → elastic_launch, c10d rendezvous).

What is written here fills torchrun's gaps for a command-line tool: its arguments come from our flags, a bad
count or a port in use is refused before anything starts (torchrun would report them from deep inside its agent),
and a failed rank comes back as one error naming the rank and that rank's own message (the error file each
worker writes, `record_worker_error`).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from tuneforge.distributed import DistributedError
from tuneforge.distributed.env import world_from_env

log = logging.getLogger("tuneforge.distributed")

DEFAULT_PORT = 29500


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    master: str | None = None  # ADDR:PORT of node 0; None on one machine: torchrun picks a free port
    run_id: str = "tuneforge"

    def check(self) -> None:
        if self.nproc < 1:
            raise DistributedError(f"--nproc {self.nproc}: give the number of processes per machine, 1 or more")
        if self.nnodes < 1:
            raise DistributedError(f"--nnodes {self.nnodes}: give the number of machines, 1 or more")
        if not 0 <= self.node_rank < self.nnodes:
            raise DistributedError(f"--node-rank {self.node_rank}: must lie in 0 … {self.nnodes - 1} (--nnodes)")
        if self.nnodes > 1 and self.master is None:
            raise DistributedError(
                f"--nnodes {self.nnodes}: every machine needs --master ADDR:PORT, the address of node 0"
            )
        if self.master is not None:
            host, port = split_master(self.master)
            if self.node_rank == 0 and is_local(host):
                check_port_free(port, self.master)

    def torchrun_args(self) -> list[str]:
        """torchrun's own flags for this plan (torch.distributed.run parses them)."""
        args = [f"--nproc-per-node={self.nproc}", f"--nnodes={self.nnodes}"]
        if self.master is None:
            # what torchrun --standalone does (in its run(), not in config_from_args): c10d on localhost, port 0
            # (the store picks a free one)
            return [*args, "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={uuid.uuid4()}"]
        # c10d rendezvous on node 0; is_host says which machine serves its store, even when node 0's address
        # as given (a DNS name, a second interface) does not match what the machine calls itself.
        is_host = "1" if self.node_rank == 0 else "0"
        return [
            *args,
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.master}",
            f"--rdzv-id={self.run_id}",
            f"--rdzv-conf=is_host={is_host}",
        ]


def split_master(master: str) -> tuple[str, int]:
    host, sep, port = master.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--master {master!r}: give ADDR:PORT of node 0, e.g. 10.0.0.1:{DEFAULT_PORT}")
    return host.strip("[]"), int(port)


def is_local(host: str) -> bool:
    if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        return socket.gethostbyname(host) in ("127.0.0.1", socket.gethostbyname(socket.gethostname()))
    except OSError:
        return False


def check_port_free(port: int, master: str) -> None:
    """Refuse a port another process holds: torch's store would fail to bind deep inside the agent, or join
    whatever listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise DistributedError(
                    f"--master {master}: port {port} is in use on this machine (another job, or an earlier run "
                    f"still exiting); choose a free one, e.g. --master {master.rpartition(':')[0]}:{port + 1}"
                ) from None
            raise


def refuse_nested(plan: LaunchPlan, env: Mapping[str, str] | None = None) -> None:
    """--nproc under a launcher that already started the processes would start N × N of them. One Slurm task
    per machine starting --nproc processes each (srun … --nproc 8 --nnodes 2) is the one nesting that is right."""
    world = world_from_env(env)
    one_task_per_node = world.launcher == "slurm" and world.world_size == plan.nnodes
    if world.launcher == "torchrun" or (world.distributed and not one_task_per_node):
        raise DistributedError(
            f"--nproc {plan.nproc}: this process was already started by a launcher ({world.launcher}: rank "
            f"{world.rank} of {world.world_size}); drop --nproc, the launcher sets the process count (or run "
            "one Slurm task per machine with --nnodes)"
        )


def launch(plan: LaunchPlan, cli_args: Sequence[str]) -> int:
    """Run `python -m tuneforge.cli CLI_ARGS` in plan.nproc processes here (and on the other machines' runs of
    the same command); returns 0 when every rank succeeded, else raises the first failed rank's error."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    plan.check()
    refuse_nested(plan)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # train.threads sets the real count in each worker
    torchrun = parse_args([*plan.torchrun_args(), "-m", "tuneforge.cli", *cli_args])
    config, cmd, cmd_args = config_from_args(torchrun)
    log.info("launching %d process(es) on this machine (%d machine(s)) through torchrun", plan.nproc, plan.nnodes)
    try:
        elastic_launch(config, cmd)(*cmd_args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        message = failure.message if isinstance(failure.message, str) else str(failure.message)
        raise DistributedError(
            f"rank {rank} (pid {failure.pid}) failed with exit code {failure.exitcode}: {message}"
        ) from None
    return 0


def record_worker_error(error: BaseException) -> None:
    """In a worker started by torchrun, write `error` to the error file torchrun reads, so the launching
    command can name it (torch's ErrorHandler writes the format its agent parses)."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(error)


def worker_main(main: Callable[[Any], int]) -> Callable[[Any], int]:
    """torch's `record` decorator around a worker's main when torchrun started it, so that an uncaught exception
    (a bug) reaches the launching command with its message; `main` itself otherwise."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return main
    from torch.distributed.elastic.multiprocessing.errors import record

    return cast("Callable[[Any], int]", record(main))
