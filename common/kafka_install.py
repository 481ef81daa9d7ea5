"""What a local Apache Kafka needs on the machine (``common.kafka_cluster``): Java 17 or
newer, and the broker's jars, fetched once with Maven from Maven Central into a cache
directory."""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from common.errors import ConfigError, DependencyUnavailable

KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "inferstream" / "kafka"


def java_executable(java: str | None = None, java_home: Path | None = None) -> str:
    """The ``java`` to run Kafka with (explicit, ``<java_home>/bin/java`` or on PATH),
    checked to be Java 17 or newer; else a ConfigError saying what to install. Entry
    points pass ``JAVA_HOME`` as ``java_home`` (``common.settings.ToolSettings``)."""
    candidates = [java] if java else []
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    found = shutil.which("java")
    if found:
        candidates.append(found)
    install = (
        f"Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+: install it "
        "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    )
    for exe in candidates:
        try:
            out = subprocess.run(
                [exe, "-version"], capture_output=True, text=True, timeout=30, check=False
            ).stderr
        except OSError:
            continue
        m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
        if m:
            major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
            if major >= MIN_JAVA:
                return exe
            raise ConfigError(f"{install} (found Java {major} at {exe})")
    raise ConfigError(f"{install} (no java found)")


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock file (created with the directory if missing): what is
    made once per machine (the jars, the class-data archive) is made by one caller while
    concurrent ones (parallel test sessions) wait, then find it made."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def kafka_libs(cache_dir: Path = DEFAULT_CACHE_DIR, version: str = KAFKA_VERSION) -> Path:
    """The directory of the broker's jars, fetched with Maven on first use.

    Concurrent callers (parallel test sessions) share one download: a file lock
    serialises them, and a marker file is written only once the copy is complete."""
    libs = cache_dir / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    with exclusive(cache_dir):
        if marker.exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ConfigError(
                f"fetching Apache Kafka {version} needs Maven: install it (Debian: apt-get install maven)"
            )
        pom_text = resources.files("common.kafka").joinpath("pom.xml").read_text()
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_text(pom_text.replace("@KAFKA_VERSION@", version))
            out = Path(tmp) / "libs"
            proc = subprocess.run(
                [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={out}", "-DincludeScope=runtime"],
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            if proc.returncode != 0 or not any(out.glob(f"kafka_2.13-{version}.jar")):
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
                raise DependencyUnavailable(
                    f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} from Maven Central:\n{tail}"
                )
            if libs.exists():
                shutil.rmtree(libs)
            libs.parent.mkdir(parents=True, exist_ok=True)
            out.rename(libs)
        marker.write_text(version)
    return libs
