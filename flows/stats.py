"""Moved to ``monitoring.stats`` (the statistics library below the flows); kept so
existing ``from flows.stats import ...`` lines keep working."""

from monitoring.stats import *  # noqa: F403
from monitoring.stats import DEFAULT_THRESHOLDS, P_VALUE_METHODS  # noqa: F401
