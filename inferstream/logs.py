"""Logging set-up for the command line's processes (structured enough to grep)."""

from __future__ import annotations

import logging


def configure(level: str = "INFO") -> None:
    """``level``: a logging level name (the CLI passes INFERSTREAM_LOG_LEVEL)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
