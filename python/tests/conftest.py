"""Fixtures: a real nexusd per test module, on a temporary socket and data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import nexus_memory

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30.0


class Daemon:
    """A nexusd child process; start() and stop() can be repeated (restart tests)."""

    def __init__(self, root: Path) -> None:
        self.binary = os.environ.get("NEXUSD_BIN", str(REPO / "target" / "debug" / "nexusd"))
        self.socket = str(root / "nexusd.sock")
        self.data_dir = str(root / "data")
        self.log = root / "nexusd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not Path(self.binary).exists():
            pytest.fail(f"nexusd not found at {self.binary}: run `cargo build -p nexus-daemon` or set NEXUSD_BIN")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--socket", self.socket, "--data-dir", self.data_dir, "--embedder", "hashing", "--log", "warn"],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nexusd exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                nexus_memory.Client(self.socket, timeout=1.0).close()
                return
            except nexus_memory.DaemonNotRunning:
                time.sleep(0.05)
        pytest.fail(f"nexusd did not answer within {STARTUP_TIMEOUT_S}s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("nexusd"))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[nexus_memory.Client]:
    with nexus_memory.Client(daemon.socket) as c:
        yield c
