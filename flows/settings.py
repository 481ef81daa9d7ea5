"""Settings of the scheduled flows (drift, BI load, maintenance).

Read once by each flow's entry point; the tasks below receive explicit values.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from common.settings import CommonSettings
from flows.report_store import ReportStore, open_store


class FlowSettings(CommonSettings):
    reports_dir: Path | None = Field(
        default=None,
        description="Folder of the drift reports (default <data_dir>/reports); with an s3:// "
        "REPORTS_URL, the local working folder runs are written to before they are published",
    )
    reports_url: str | None = Field(
        default=None,
        description="Where drift reports are kept: file:///dir or a path (as REPORTS_DIR), or "
        "s3://bucket/prefix on the object store of INFERSTREAM_S3_* (default: REPORTS_DIR)",
    )
    drift_webhook_url: str | None = Field(
        default=None,
        description="If set, a JSON alert is POSTed here when a drift run finds drift, an estimated "
        "quality drop, or no data",
    )
    drift_sample_rows: int = Field(
        default=2_000,  # Evidently's cost is mostly per column (plotly); 2k rows draw the same shapes
        ge=1_000,
        description="Rows per side given to Evidently for the report's charts (statistics use all rows)",
    )
    reports_base_url: str | None = Field(
        default=None,
        description="URL serving the reports folder (e.g. https://reports.example/drift); the Prefect "
        "link artifact points there. Default: the report's file:// URL, or its s3:// URL",
    )
    report_retention_days: int = Field(
        default=90, ge=1, description="Drift reports older than this are removed by the maintenance flow"
    )
    pushgateway_url: str | None = Field(
        default=None,
        description="If set (host:port or URL), each drift run pushes its scores to this Pushgateway",
    )
    lake_retention_days: int = Field(
        default=30, ge=1, description="Lake partitions older than this are removed"
    )
    lake_vacuum_hours: int = Field(
        default=24,
        ge=0,
        description="Data files no table snapshot has referenced for this long are deleted; "
        "keep it above the longest query",
    )

    def reports(self) -> ReportStore:
        """Where the reports are kept (``flows.report_store``); a malformed REPORTS_URL or
        S3 endpoint is a ConfigError naming it. Contacts nothing."""
        return open_store(self.reports_url, self.reports_dir, self.data_dir / "reports", self.s3_options())

    @property
    def reports_root(self) -> Path:
        """The local folder reports are written to (the store itself unless REPORTS_URL
        is s3://)."""
        return self.reports().local
