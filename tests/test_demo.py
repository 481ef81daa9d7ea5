"""The demo's end-to-end path on its embedded default (Tansu, in memory), so that the
zero-setup broker cannot rot while the rest of the suite runs on Apache Kafka."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_on_the_embedded_broker(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["INFERSTREAM_DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [sys.executable, "-m", "inferstream", "demo", "--rows", "400", "--concurrency", "8", "--skip-flows"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "embedded broker (Tansu, in memory)" in out.stdout
    summary = dict(re.findall(r"^\s+([a-z ]+?)\s*: (\S+)", out.stdout, re.MULTILINE))
    assert summary["predictions answered"] == "400"
    assert summary["events landed"] == "400"
    assert (summary["events missing"], summary["duplicates"]) == ("0", "0")
