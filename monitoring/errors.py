"""What the statistics library raises; every error names the column or argument to fix.

MonitoringError            root: catch this to handle any of them (an InferstreamError)
├── MissingColumnError     a column named (or needed) is not in a frame
├── SchemaError            a schema entry or column type the library cannot use
└── NotFittedError         estimating with a CBPE that was never fitted
"""

from __future__ import annotations

from common.errors import InferstreamError


class MonitoringError(InferstreamError, ValueError):
    """Bad input to a statistics function; the message says what to change (a ValueError
    too, for callers that catch the builtin)."""


class MissingColumnError(MonitoringError, KeyError):
    def __init__(self, columns: list[str], frame: str) -> None:
        self.columns = columns
        self.frame = frame
        names = ", ".join(repr(c) for c in columns)
        super().__init__(f"the {frame} frame has no column {names}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class SchemaError(MonitoringError):
    pass


class NotFittedError(MonitoringError):
    pass
