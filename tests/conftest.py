"""Shared fixtures: a fresh app over a temp data folder, and a real waitress server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app import create_app, request_log

REPO = Path(__file__).resolve().parent.parent

CHROMIUM = "/usr/bin/chromium"
# Chromium as this machine runs it: headless, no sandbox (root), and none of its background
# connections, which the closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True)
def request_log_lines_stay_with_their_test():
    """The request log writes in batches a fifth of a second apart, from its own thread, to
    whatever stderr is then, which between two tests is the terminal. In tests it writes only
    when each test ends, so an in-process app's lines land in that test's captured output."""
    log = request_log()
    log.interval = 3600
    yield
    log.flush()


@pytest.fixture
def app(tmp_path):
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "TESTING": True})
    yield app
    app.extensions["roster.store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``flask --app app ...`` exactly as an operator would, on the given data folder."""
    env = {**os.environ, "ROSTER_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_key_with_cli(data_dir: Path, directory: str = "Default") -> str:
    result = run_cli(data_dir, "key", "create", "--directory", directory, "--name", "Test key")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


class LiveServer:
    """``waitress-serve --call app:create_app`` in a subprocess, on a free loopback port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self) -> None:
        env = {**os.environ, "ROSTER_DATA_DIR": str(self.data_dir)}
        command = [
            sys.executable,
            "-m",
            "waitress",
            f"--listen=127.0.0.1:{self.port}",
            "--call",
            "app:create_app",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                requests.get(f"{self.url}/v2/ServiceProviderConfig", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def live_server(tmp_path):
    """A server with a Default-directory key, created with the CLI before the server starts
    (while it runs, the server alone may write its data folder)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = LiveServer(data_dir)
    server.token = create_key_with_cli(data_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def scim_session(live_server):
    """A keep-alive HTTP session holding the live server's directory key."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {live_server.token}"
    session.headers["Content-Type"] = "application/scim+json; charset=utf-8"
    session.base = f"{live_server.url}/v2"
    yield session
    session.close()
