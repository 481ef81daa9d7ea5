"""Root of inferstream's exceptions.

InferstreamError
├── ConfigError          a setting is missing or wrong; the message names it
├── DependencyUnavailable  a broker/database/binary cannot be reached (retriable)
└── ModelError           the served model gave no answer for one input (an error event records it)
    ├── ModelFailed      the estimator raised: a fault of the server, not of the request
    └── NonFiniteOutput  valid inputs outside the range the model can compute with: the client's to fix
"""


class InferstreamError(Exception):
    """Base class for every error inferstream raises on purpose."""

    retriable: bool = False


class ConfigError(InferstreamError):
    """A setting is wrong. The message names the setting (environment variable) to fix."""


class DependencyUnavailable(InferstreamError):
    """A service inferstream depends on is unreachable; trying again later may work."""

    retriable = True


class ModelError(InferstreamError):
    """The served model gave no answer for one input."""

    @property
    def detail(self) -> str:
        """What the error event and the response say: the error's type and message."""
        return f"{type(self).__name__}: {self}"[:1000]


class ModelFailed(ModelError):
    """The estimator raised ``cause`` (anything: a corrupt artifact, a library bug)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.__cause__ = cause

    @property
    def detail(self) -> str:
        return str(self)[:1000]  # names the cause's type, as the error events always have


class NonFiniteOutput(ModelError, ValueError):
    """The model's output is NaN or infinite: the inputs are valid numbers but outside
    the range the model can compute with (a client error, not a server fault)."""
