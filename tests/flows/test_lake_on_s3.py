"""The flows read a lake kept in object storage as they read a local one: the drift flow
and the BI load on an ``s3://`` lake (SeaweedFS), and the lake size `kafka status` shows.
The table is written locally by the lake's own writer and copied to the bucket as it is
(a Delta table's paths are relative to its root)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from common import lake
from common.objectstore import S3Folder
from flows.bi_load import bi_load_flow
from flows.drift import DRIFT_STATE_NAME, drift_flow

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}


def _upload(local: Path, url: str, options: dict[str, str]) -> None:
    folder = S3Folder(url, options, "INFERSTREAM_LAKE_URL")
    for f in sorted(local.rglob("*")):
        if f.is_file():
            folder.put(f.relative_to(local).as_posix(), f.read_bytes(), "application/octet-stream")


def test_the_drift_flow_and_the_bi_load_read_a_lake_in_object_storage(
    prefect_harness, model_lake, write_lake, seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = model_lake
    staging = m.data_dir / "staging"
    write_lake(staging, m.name, m.version, m.drifted(), m.features)
    url = f"s3://{seaweed.bucket}/flows-{uuid.uuid4().hex[:8]}"
    _upload(staging, url, seaweed.storage_options())
    for name, value in {
        "INFERSTREAM_LAKE_URL": url,
        "INFERSTREAM_S3_ENDPOINT": seaweed.endpoint,
        "INFERSTREAM_S3_ACCESS_KEY_ID": seaweed.access_key,
        "INFERSTREAM_S3_SECRET_ACCESS_KEY": seaweed.secret_key,
    }.items():
        monkeypatch.setenv(name, value)
    assert not (m.data_dir / "lake").exists()  # nothing local to fall back on

    where = lake.Lake(url, seaweed.storage_options())
    size = lake.table_size(where, lake.EVENTS_TABLE)  # what `kafka status` reports as the lake's size
    assert size is not None and size.rows == m.reference.height and size.files >= 1 and size.bytes > 0

    state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    assert state.is_completed() and state.name == DRIFT_STATE_NAME, state
    (summary,) = (m.data_dir / "reports" / m.name).glob("*/summary.json")
    doc = orjson.loads(summary.read_bytes())
    assert doc["current_rows"] == m.reference.height and doc["verdict"]["drift"] is True

    loaded = bi_load_flow(data_dir=str(m.data_dir))
    assert loaded.files_loaded == size.files
    assert loaded.describe().startswith(
        f"loaded {size.files} new lake file(s) in 1 partition(s): {m.reference.height} events"
    ), loaded.describe()
