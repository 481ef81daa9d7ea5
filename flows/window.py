"""The time window a flow looks at: ``last_hour``, ``last_day`` or an explicit range."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from common.errors import ConfigError

NAMED = {"last_hour": timedelta(hours=1), "last_day": timedelta(days=1)}


@dataclass(frozen=True)
class Window:
    """Half-open ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC"

    def to_json(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _utc(value: str | datetime, field: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"{field}: not an ISO-8601 time: {value!r}") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def resolve(
    window: str = "last_hour",
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    now: datetime | None = None,
) -> Window:
    """An explicit ``start``/``end`` wins over the named ``window``; a named window ends at
    the top of the current hour (whole, closed hours: a half-filled hour would look like
    a drop in traffic)."""
    if start is not None or end is not None:
        if start is None or end is None:
            raise ConfigError("window: give both start and end, or neither")
        w = Window(_utc(start, "start"), _utc(end, "end"))
    else:
        if window not in NAMED:
            raise ConfigError(f"window: expected one of {sorted(NAMED)} or start/end, got {window!r}")
        top = (now or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        w = Window(top - NAMED[window], top)
    if w.end <= w.start:
        raise ConfigError(f"window: end {w.end.isoformat()} is not after start {w.start.isoformat()}")
    return w
