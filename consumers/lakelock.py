"""A lock per lake hour directory, shared by the lander (publishing and removing files)
and compaction (which swaps the whole directory). An advisory ``flock`` on a hidden
file next to the directory: readers never see it and never need it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def lock_path(hour_dir: Path) -> Path:
    return hour_dir.parent / f".{hour_dir.name}.lock"


@contextlib.contextmanager
def hour_lock(hour_dir: Path) -> Iterator[None]:
    path = lock_path(hour_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
