"""A drift run's outcome: drift, an estimated quality drop, no drift, or no data, and how each one shows.

One table says, for every surface, what an outcome looks like, so the Prefect state,
the report, the index, the webhook, the event and the CLI's exit code never disagree:

    outcome       Prefect state                       event                            exit  colour
    drift         Completed "Drift detected"          inferstream.drift.detected       1     red
    quality_drop  Completed "Quality drop estimated"  inferstream.drift.quality-drop   4     orange
    no_drift      Completed "No drift"                inferstream.drift.none           0     green
    no_data       Failed "No data"                    inferstream.drift.no-data        3     amber

A finding is a clean run (Completed): the monitor did its job. An estimated quality
drop (CBPE, ``flows.performance``) without input drift is a finding like drift, so it
is Completed too, with its own name, event, exit code and colour, and it alerts (webhook)
like drift; when the inputs drifted as well the run is "Drift detected" and the reason
names both. "No data" is Failed on purpose: a window with no rows was not monitored at
all (lander down, API idle, wrong model name), and Prefect draws only Completed in
green. Errors stay Failed with their own message, and ``inferstream flows run drift``
exits 2 for them.

"No data" is an outcome, not an error, so it leaves no traceback. Prefect's engine, when
a worker runs a flow (``python -m prefect.engine``), raises the result of any final
state but Completed and logs it in the run's logs as "Engine execution exited with
unexpected exception" with a traceback, after the state is set and the run's last line
("Finished in state No data(...)") is logged. The "No data" state therefore carries a
``NoData`` exception as its result, and a logging filter on Prefect's run and engine
loggers drops the records whose exception is a ``NoData``; every other error keeps its
traceback.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from common.errors import InferstreamError

if TYPE_CHECKING:  # Prefect is imported by the one function that builds its states:
    # the summary, the index and the reports' settings read outcomes without it
    # (`inferstream flows run` checks its arguments before Prefect is imported)
    from prefect import State


class Outcome(StrEnum):
    DRIFT = "drift"
    QUALITY_DROP = "quality_drop"
    NO_DRIFT = "no_drift"
    NO_DATA = "no_data"


STATE_NAMES = {
    Outcome.DRIFT: "Drift detected",
    Outcome.QUALITY_DROP: "Quality drop estimated",
    Outcome.NO_DRIFT: "No drift",
    Outcome.NO_DATA: "No data",
}
LABELS = {
    Outcome.DRIFT: "DRIFT",
    Outcome.QUALITY_DROP: "QUALITY DROP",
    Outcome.NO_DRIFT: "NO DRIFT",
    Outcome.NO_DATA: "NO DATA",
}
COLOURS = {
    Outcome.DRIFT: "#b00020",
    Outcome.QUALITY_DROP: "#c2410c",
    Outcome.NO_DRIFT: "#1b5e20",
    Outcome.NO_DATA: "#8a5a00",
}
EVENTS = {
    Outcome.DRIFT: "inferstream.drift.detected",
    Outcome.QUALITY_DROP: "inferstream.drift.quality-drop",
    Outcome.NO_DRIFT: "inferstream.drift.none",
    Outcome.NO_DATA: "inferstream.drift.no-data",
}
EXIT_CODES = {Outcome.NO_DRIFT: 0, Outcome.DRIFT: 1, Outcome.NO_DATA: 3, Outcome.QUALITY_DROP: 4}
ALERTING = frozenset({Outcome.DRIFT, Outcome.QUALITY_DROP, Outcome.NO_DATA})  # the webhook is called
EXIT_ERROR = 2  # the run failed: a setting, a missing model, a broken file


def decide(current_rows: int, drift: bool, quality_alert: bool = False) -> Outcome:
    if current_rows == 0:
        return Outcome.NO_DATA
    if drift:
        return Outcome.DRIFT
    return Outcome.QUALITY_DROP if quality_alert else Outcome.NO_DRIFT


class NoData(InferstreamError):
    """The result of a "No data" state: what Prefect raises for it at the top of a
    worker's flow process, and what ``drift_flow(...)`` raises when called without
    ``return_state=True``."""


class _NoDataTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], NoData))


QUIET_LOGGERS = ("prefect.flow_runs", "prefect.engine")  # the engine's error loggers


def quiet_no_data_tracebacks() -> None:
    """Drop Prefect's "exited with unexpected exception" traceback for a "No data"
    run (see the module docstring); idempotent, done when this module is imported."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoDataTraceback) for f in logger.filters):
            logger.addFilter(_NoDataTraceback())


quiet_no_data_tracebacks()


def state(outcome: Outcome, message: str) -> State[Any]:
    from prefect.states import Completed, Failed

    name = STATE_NAMES[outcome]
    if outcome is Outcome.NO_DATA:
        return Failed(name=name, message=message, data=NoData(message))
    return Completed(name=name, message=message)


def exit_code(state_name: str | None, completed: bool) -> int:
    """``inferstream flows run drift``'s exit code for a final flow state."""
    for outcome, name in STATE_NAMES.items():
        if state_name == name and (completed or outcome is Outcome.NO_DATA):
            return EXIT_CODES[outcome]
    return 0 if completed else EXIT_ERROR


def explain(
    outcome: Outcome,
    drifted_features: list[str],
    n_features: int,
    drift_share: float,
    prediction_drift: bool,
    quality_reason: str | None = None,
) -> str:
    """The verdict's reason in words, with the rule that made it (so a share under the
    threshold never reads as the reason for a drift, or for its absence). An estimated
    quality drop (``quality_reason``) leads the reason when it is the finding, and is
    added after the drift's reason when the inputs drifted as well."""
    if outcome is Outcome.NO_DATA:
        return "no data: the window holds no rows for this model and version"
    k = len(drifted_features)
    share = k / n_features if n_features else 0.0
    feats = f"{k} of {n_features} features drifted ({share:.0%}"
    feats += (
        f", at or above the {drift_share:.0%} share)"
        if k and share >= drift_share
        else f", under the {drift_share:.0%} share)"
    )
    if k:
        shown = drifted_features[:6]
        more = f" and {k - len(shown)} more" if k > len(shown) else ""
        feats += ": " + ", ".join(shown) + more
    if outcome is Outcome.DRIFT:
        if prediction_drift and not (k and share >= drift_share):
            text = f"prediction drift (drift on its own, whatever the features do); {feats}"
        else:
            text = ("prediction drift; " if prediction_drift else "") + feats
        return f"{text}; {quality_reason}" if quality_reason else text
    text = f"no drift: {feats}; the prediction did not drift"
    if outcome is Outcome.QUALITY_DROP and quality_reason:
        return f"{quality_reason}; {text}"
    return text
