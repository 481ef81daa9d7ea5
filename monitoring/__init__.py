"""inferstream's statistics, for its flows and for your own frames.

    from monitoring import drift, estimate_performance

    result = drift(reference_df, current_df)            # pandas or polars frames
    result["age"].method, result["age"].drifted, result.drift

    perf = estimate_performance(reference_df, current_df, target="label",
                                prediction="prediction", scores="score", chunk_size=5000)
    perf.slices[0].metrics["roc_auc"].value             # before any label exists

No lake, broker or model artifact is needed. The package imports nothing from the
service (api, consumers, flows); they import it.
"""

from monitoring.cbpe import CBPE, MetricEstimate, PerformanceResult, SliceEstimate, estimate_performance
from monitoring.datadrift import DriftResult, drift
from monitoring.errors import MissingColumnError, MonitoringError, NotFittedError, SchemaError
from monitoring.stats import ColumnDrift

__all__ = [
    "CBPE",
    "ColumnDrift",
    "DriftResult",
    "MetricEstimate",
    "MissingColumnError",
    "MonitoringError",
    "NotFittedError",
    "PerformanceResult",
    "SchemaError",
    "SliceEstimate",
    "drift",
    "estimate_performance",
]
