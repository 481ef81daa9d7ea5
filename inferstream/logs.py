"""Logging set-up for the command line's processes (structured enough to grep)."""

from __future__ import annotations

import logging
import os


def configure(default: str = "INFO") -> None:
    logging.basicConfig(
        level=os.environ.get("INFERSTREAM_LOG_LEVEL", default).upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
    )
    for noisy in ("aiokafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
