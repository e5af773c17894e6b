"""`loyalty serve` as a separate process for the benchmark: start it on a free port, wait until it answers,
stop it afterwards, and read the resident memory of it and of its worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Server:
    base: str
    pid: int

    def rss_mb(self) -> float:
        """Resident memory of the server: the process and its children (the workers of `--workers N`)."""
        return round(sum(rss_mb(pid) for pid in process_tree(self.pid)), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # the process has just exited
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = [int(c) for c in task.read_text().split()]
        except OSError:
            continue
        for child in children:
            found.extend(process_tree(child))
    return found


@contextmanager
def serving(url: str, export_dir: Path, workers: int = 1, jobs: bool = True,
            extra_env: dict[str, str] | None = None, startup_sec: float = 60) -> Iterator[Server]:
    """`loyalty serve --workers N` on a free loopback port against `url`, ready to answer when yielded."""
    port = free_port()
    env = {**os.environ, "LOYALTY_DATABASE_URL": url, "LOYALTY_EXPORT_DIR": str(export_dir), **(extra_env or {})}
    args = [sys.executable, "-m", "loyalty.cli", "serve", "--port", str(port), "--workers", str(workers),
            "--jobs" if jobs else "--no-jobs"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Server(f"http://127.0.0.1:{port}", process.pid)
    try:
        _wait_ready(server, process, workers, startup_sec)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_ready(server: Server, process: subprocess.Popen, workers: int, startup_sec: float) -> None:
    """Until /healthz answers and, with several workers, they all have had time to start too: a worker
    answers only once it has built its app, and a load run that starts earlier would measure fewer processes.
    Workers start together and take about as long as the first one that answered, so wait that long again."""
    started = time.monotonic()
    deadline = started + startup_sec
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"`loyalty serve` exited with {process.returncode}: {err[-2000:]}")
        try:
            ready = httpx.get(server.base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and len(worker_pids(server.pid)) >= (workers if workers > 1 else 0):
            if workers > 1:
                time.sleep(min(10.0, time.monotonic() - started))
            return
        time.sleep(0.1)
    raise RuntimeError(f"`loyalty serve` did not answer within {startup_sec} s")


def worker_pids(pid: int) -> list[int]:
    """uvicorn's worker processes under `pid` (multiprocessing spawns them; other helpers do not count)."""
    found = []
    for child in process_tree(pid)[1:]:
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found
