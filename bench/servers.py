"""Server processes for the benchmark: Roster and the limit, each under waitress on loopback.

Both are started the way the README serves Roster (``python -m waitress --call``), with the same
thread count, so the only difference between them is the application. Their CPU time and memory
are read from /proc, which counts every waitress thread of the process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
THREADS = 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_key(data_dir: Path, repo: Path = REPO) -> str:
    """A directory key made with the operator CLI, as the README says, while no server runs.

    The server will hold an exclusive lock on its data folder, so CLI writes happen before it
    starts. The access token is the last line the command prints.
    """
    command = ["key", "create", "--directory", "Default", "--name", "bench"]
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *command],
        cwd=repo,
        env={**os.environ, "ROSTER_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"key create failed: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


@dataclass
class CpuSample:
    ticks_seconds: float
    thread_nanoseconds: dict[str, int]

    def seconds_until(self, later: CpuSample) -> float:
        """CPU seconds between two samples: the per-thread nanosecond counts when they agree
        with the clock-tick count (10 ms steps, too coarse for a phase of 10 requests) within
        two ticks; the tick count otherwise, e.g. when a thread ended in between and took
        its nanoseconds with it."""
        by_ticks = later.ticks_seconds - self.ticks_seconds
        if not self.thread_nanoseconds.keys() <= later.thread_nanoseconds.keys():
            return by_ticks
        precise = (
            sum(
                nanoseconds - self.thread_nanoseconds.get(thread, 0)
                for thread, nanoseconds in later.thread_nanoseconds.items()
            )
            / 1e9
        )
        return precise if abs(precise - by_ticks) <= 2 / CLOCK_TICKS else by_ticks


class Server:
    """One waitress process serving ``factory`` (``module:function``) on a free port."""

    def __init__(
        self,
        name: str,
        factory: str,
        log_path: Path,
        env: dict | None = None,
        repo: Path = REPO,
    ) -> None:
        self.name = name
        self.repo = repo  # the checkout whose code it runs (bench.ab compares two)
        self.factory = factory
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        # A server keeps Python's bytecode cache, as any installed one does, so a restart does
        # not compile Roster's modules again (0.3 s of it here, where the shell sets this).
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        command = [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{self.port}",
            f"--threads={THREADS}",
            "--call",
            self.factory,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until it exits
        self.process = subprocess.Popen(
            command, cwd=self.repo, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()

    def wait_until_answering(self, probe, timeout: float = 120.0) -> float:
        """Poll ``probe()`` until it returns True; seconds since launch are returned."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            try:
                if probe():
                    return time.monotonic() - started
            except requests.ConnectionError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and wait, so a restarted server finds the data folder free."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (fields 14 and 15 of /proc/<pid>/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def wait_until_quiet(
        self, window: float = 0.5, busy_share: float = 0.05, timeout: float = 120.0
    ) -> float:
        """Wait until the process uses under ``busy_share`` of a core over ``window`` seconds;
        the seconds waited are returned.

        A write can start a compaction that runs on in the background for seconds after the
        writes that started it are answered; a slice measured meanwhile, on either server,
        shares the two cores with it.
        """
        started = time.monotonic()
        before = self.cpu_seconds()
        while time.monotonic() - started < timeout:
            time.sleep(window)
            after = self.cpu_seconds()
            if after - before < busy_share * window:
                break
            before = after
        return time.monotonic() - started

    def cpu_sample(self) -> CpuSample:
        """The process's CPU in clock ticks and, per live thread, in nanoseconds."""
        threads = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with suppress(FileNotFoundError, ProcessLookupError):
                threads[task.name] = int((task / "schedstat").read_text().split()[0])
        return CpuSample(self.cpu_seconds(), threads)

    def rss_mib(self) -> float:
        """Resident memory (VmRSS) of the server process."""
        return self._status_mib("VmRSS")

    def peak_rss_mib(self) -> float:
        """The most resident memory the process has had since it started (VmHWM)."""
        return self._status_mib("VmHWM")

    def _status_mib(self, field: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} for {self.name}")

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
