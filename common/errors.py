"""Root of inferstream's exceptions.

InferstreamError
├── ConfigError          a setting is missing or wrong; the message names it
└── DependencyUnavailable  a broker/database/binary cannot be reached (retriable)
"""


class InferstreamError(Exception):
    """Base class for every error inferstream raises on purpose."""

    retriable: bool = False


class ConfigError(InferstreamError):
    """A setting is wrong. The message names the setting (environment variable) to fix."""


class DependencyUnavailable(InferstreamError):
    """A service inferstream depends on is unreachable; trying again later may work."""

    retriable = True
