"""Drift reports kept in object storage (``INFERSTREAM_REPORTS_URL=s3://…``), against a
real S3-compatible server (SeaweedFS, the ``seaweed`` fixture): drift runs publish
report.html, report.json, summary.json and the index to the bucket and leave no run
folder behind; a second run's index lists both; retention deletes an old run's objects;
a fresh worker rebuilds the index from the bucket's summaries; a bad URL, a missing
bucket, wrong credentials or an unreachable store are one line naming the setting.

The bucket is read back with a pyarrow filesystem built here, not with the code under
test."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta

import pyarrow.fs as pafs
import pytest

from common.errors import ConfigError, DependencyUnavailable
from common.seaweed import SeaweedS3
from flows import report
from flows.drift import drift_flow, run_drift
from flows.maintenance import RUN_DIR_FORMAT, maintenance_flow
from flows.report_store import ReportStore
from flows.settings import FlowSettings
from flows.summary import DriftSummary

from .test_report_retention import summary as retention_summary

pytestmark = pytest.mark.timeout(900)  # a drift run draws Evidently's charts

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
EMPTY = {"start": (T0 + timedelta(days=1)).isoformat(), "end": (T0 + timedelta(days=1, hours=1)).isoformat()}


def _env(store: SeaweedS3, url: str) -> dict[str, str]:
    return {
        "INFERSTREAM_REPORTS_URL": url,
        "INFERSTREAM_S3_ENDPOINT": store.endpoint,
        "INFERSTREAM_S3_ACCESS_KEY_ID": store.access_key,
        "INFERSTREAM_S3_SECRET_ACCESS_KEY": store.secret_key,
    }


class Bucket:
    """The test's view of one prefix of the bucket, through its own pyarrow filesystem."""

    def __init__(self, store: SeaweedS3, prefix: str) -> None:
        self.root = f"{store.bucket}/{prefix}"
        self.fs = pafs.S3FileSystem(
            access_key=store.access_key,
            secret_key=store.secret_key,
            region="us-east-1",
            scheme="http",
            endpoint_override=store.endpoint.removeprefix("http://"),
        )

    def files(self) -> set[str]:
        sel = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        return {
            i.path.removeprefix(self.root + "/")
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File
        }

    def read(self, rel: str) -> bytes:
        with self.fs.open_input_stream(f"{self.root}/{rel}") as f:
            return f.read()

    def meta(self, rel: str) -> dict[str, bytes]:
        with self.fs.open_input_stream(f"{self.root}/{rel}") as f:
            return dict(f.metadata())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def _runs(files: set[str]) -> dict[str, set[str]]:
    """``{<model>/<run>: {file names}}`` of the run folders among ``files``."""
    out: dict[str, set[str]] = {}
    for rel in files:
        parts = rel.split("/")
        if len(parts) == 3:
            out.setdefault("/".join(parts[:2]), set()).add(parts[2])
    return out


def _index_links(page: str) -> set[str]:
    return set(re.findall(r"href='([^']+)/report\.html'", page))


def test_drift_runs_publish_reports_and_the_index_to_the_bucket(
    prefect_harness, model_lake, write_lake, seaweed, monkeypatch
):
    m = model_lake
    url = f"s3://{seaweed.bucket}/drift-runs/reports"
    for k, v in _env(seaweed, url).items():
        monkeypatch.setenv(k, v)
    bucket = Bucket(seaweed, "drift-runs/reports")
    write_lake(m.data_dir / "lake", m.name, m.version, m.predict(m.reference), m.features)

    first = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    assert first.is_completed() and first.name == "No drift", first.message
    runs = _runs(bucket.files())
    assert list(runs.values()) == [{"report.html", "report.json", "summary.json"}]
    (run1,) = runs
    assert f"report {url}/{run1}/report.html" in (first.message or "")  # the run's link: its s3:// URL
    page = bucket.read("index.html").decode()
    assert _index_links(page) == {run1} and "<b>NO DRIFT</b>" in page
    html = bucket.read(f"{run1}/report.html")
    assert b"Verdict: NO DRIFT" in html and len(html) > 500_000  # the whole page, Evidently included
    assert bucket.meta(f"{run1}/report.html")["Content-Type"] == b"text/html; charset=utf-8"
    assert bucket.meta("index.html")["Cache-Control"] == b"no-cache"
    assert DriftSummary.model_validate_json(bucket.read(f"{run1}/summary.json")).model == m.name
    # nothing of the run is left on the worker's disk but its summary in the index's cache
    local = m.data_dir / "reports"
    assert not list(local.glob(f"{m.name}/*"))
    assert (local / ".store-summaries" / run1 / "summary.json").is_file()

    second = run_drift(m.data_dir, m.name, **EMPTY)  # an empty window: "No data", still a report
    assert second.report_html is None and second.report_url is not None
    runs = _runs(bucket.files())
    assert len(runs) == 2 and all(
        files == {"report.html", "report.json", "summary.json"} for files in runs.values()
    )
    (run2,) = set(runs) - {run1}
    assert second.report_url == f"{url}/{run2}/report.html"
    page = bucket.read("index.html").decode()
    assert _index_links(page) == {run1, run2}
    assert "<b>NO DATA</b>" in page and "<b>NO DRIFT</b>" in page
    assert page.index(run2) < page.index(run1)  # newest first


def _published_run(store: ReportStore, model: str, run_time: datetime) -> str:
    run_dir = store.local / model / run_time.strftime(RUN_DIR_FORMAT)
    report.write_empty_run(run_dir, DriftSummary.model_validate(retention_summary(model, run_time)))
    store.publish_run(run_dir)
    return run_dir.relative_to(store.local).as_posix()


def test_retention_deletes_old_runs_in_the_bucket_from_a_fresh_worker(
    prefect_harness, seaweed, tmp_path, monkeypatch
):
    url = f"s3://{seaweed.bucket}/retention"
    bucket = Bucket(seaweed, "retention")
    writer = ReportStore(tmp_path / "writer", url, seaweed.storage_options())
    now = datetime.now(UTC)
    old = [_published_run(writer, m, now - timedelta(days=d)) for m, d in (("a", 8), ("b", 30))]
    new = [_published_run(writer, m, now - timedelta(days=d)) for m, d in (("a", 6), ("b", 0))]
    bucket.fs.open_output_stream(f"{bucket.root}/a/not-a-run/notes.txt").close()  # not ours: left alone
    writer.refresh_index()
    assert _index_links(bucket.read("index.html").decode()) == {*old, *new}

    # another worker, nothing on its disk: it reads the runs and their summaries from the bucket
    for k, v in _env(seaweed, url).items():
        monkeypatch.setenv(k, v)
    res = maintenance_flow(data_dir=str(tmp_path / "worker"), report_retention_days=7)

    assert sorted(res.removed_reports or []) == sorted(f"{url}/{rel}" for rel in old)
    runs = _runs(bucket.files())
    assert set(runs) == {*new, "a/not-a-run"}
    assert not any(f.startswith(tuple(f"{rel}/" for rel in old)) for f in bucket.files())
    assert _index_links(bucket.read("index.html").decode()) == set(new)
    cached = {
        p.parent.relative_to(p.parents[2]).as_posix() for p in (tmp_path / "worker").rglob("summary.json")
    }
    assert cached == set(new)
    # the first worker's cache follows the bucket at its next refresh
    writer.refresh_index()
    assert {
        p.parent.relative_to(p.parents[2]).as_posix() for p in (tmp_path / "writer").rglob("summary.json")
    } == set(new)


def test_pages_are_stored_for_a_browser(seaweed, tmp_path):
    store = ReportStore(tmp_path, f"s3://{seaweed.bucket}/pages", seaweed.storage_options())
    (tmp_path / "dashboard.html").write_text("<!doctype html><p>dashboard")
    assert store.publish_file(tmp_path / "dashboard.html") == f"s3://{seaweed.bucket}/pages/dashboard.html"
    bucket = Bucket(seaweed, "pages")
    meta = bucket.meta("dashboard.html")
    assert (meta["Content-Type"], meta["Cache-Control"]) == (b"text/html; charset=utf-8", b"no-cache")
    rel = _published_run(store, "m", datetime.now(UTC))
    assert bucket.meta(f"{rel}/summary.json")["Content-Type"] == b"application/json"
    assert bucket.read("dashboard.html") == b"<!doctype html><p>dashboard"


@pytest.mark.parametrize(
    "url",
    ["s3://", "s3://Not_A_Bucket/x", "s3://ok-bucket/a//b", "gs://bucket/x", "file://elsewhere/x", "s3://b"],
)
def test_a_malformed_reports_url_is_one_line_naming_the_setting(url, tmp_path):
    with pytest.raises(ConfigError) as err:
        FlowSettings(data_dir=tmp_path, reports_url=url).reports()
    assert str(err.value).startswith(f"INFERSTREAM_REPORTS_URL={url!r}: ") and "\n" not in str(err.value)


def test_the_cli_refuses_a_malformed_reports_url_before_prefect_starts(monkeypatch, tmp_path, capsys):
    from inferstream.cli import main

    monkeypatch.setenv("INFERSTREAM_REPORTS_URL", "s3://Bad_Bucket/reports")
    assert main(["flows", "run", "maintenance", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("inferstream: INFERSTREAM_REPORTS_URL='s3://Bad_Bucket/reports': ") and "\n" not in err
    )
    monkeypatch.setenv("INFERSTREAM_REPORTS_URL", "s3://good/reports")
    monkeypatch.setenv("INFERSTREAM_S3_ENDPOINT", "seaweedfs:8333")  # no scheme
    assert main(["flows", "run", "bi", "--data-dir", str(tmp_path)]) == 2
    assert "INFERSTREAM_S3_ENDPOINT='seaweedfs:8333'" in capsys.readouterr().err


def test_an_unusable_store_is_one_line_naming_the_setting(seaweed, tmp_path):
    url = f"s3://{seaweed.bucket}/x"
    port = _closed_port()  # nothing listens there
    down = ReportStore(
        tmp_path, url, {**seaweed.storage_options(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    )
    wrong_key = ReportStore(tmp_path, url, {**seaweed.storage_options(), "AWS_SECRET_ACCESS_KEY": "wrong"})
    for store in (down, wrong_key):
        with pytest.raises(DependencyUnavailable) as err:
            store.check()
        msg = str(err.value)
        assert msg.startswith(f"INFERSTREAM_REPORTS_URL={url}: ") and "\n" not in msg, msg
        assert "INFERSTREAM_S3_ENDPOINT" in msg
    missing = ReportStore(tmp_path, "s3://no-such-bucket/x", seaweed.storage_options())
    with pytest.raises(
        ConfigError, match=r"^INFERSTREAM_REPORTS_URL=s3://no-such-bucket/x: bucket 'no-such-bucket'"
    ):
        missing.check()


def test_a_drift_run_fails_at_once_when_the_store_is_down(prefect_harness, model_lake, seaweed, monkeypatch):
    m = model_lake
    for k, v in _env(seaweed, f"s3://{seaweed.bucket}/down").items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("INFERSTREAM_S3_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    state = drift_flow(model_name=m.name, data_dir=str(m.data_dir), return_state=True, **WINDOW)
    assert state.is_failed()
    assert "INFERSTREAM_REPORTS_URL=s3://lake/down: listing the folder failed" in (state.message or "")
    assert not (m.data_dir / "reports").exists()  # nothing was computed or written


def test_file_urls_keep_todays_folder(tmp_path):
    assert FlowSettings(data_dir=tmp_path).reports() == ReportStore(tmp_path / "reports")
    assert FlowSettings(data_dir=tmp_path, reports_url=f"file://{tmp_path}/r").reports() == ReportStore(
        tmp_path / "r"
    )
    assert FlowSettings(data_dir=tmp_path, reports_url=str(tmp_path / "r")).reports_root == tmp_path / "r"
    with pytest.raises(ConfigError, match="INFERSTREAM_REPORTS_DIR"):
        FlowSettings(data_dir=tmp_path, reports_url=str(tmp_path / "r"), reports_dir=tmp_path / "s").reports()
