"""The exceptions lipsdp raises.

Every error a user can cause derives from :class:`LipSDPError`; the CLI turns it into one line
on stderr and exit code 2.  Messages say what failed, what was expected, what arrived and what
to try.
"""

__all__ = [
    "LipSDPError",
    "InvalidNetworkError",
    "UnsupportedLayerError",
    "ModelLoadError",
    "SolverError",
    "SolverNotAvailableError",
    "FormulationError",
    "MemoryLimitError",
    "CertificateError",
]


class LipSDPError(Exception):
    """Base class of every error lipsdp raises on purpose."""


class InvalidNetworkError(LipSDPError, ValueError):
    """The network is malformed: shapes do not chain, values are not finite, α > β, empty, ..."""


class UnsupportedLayerError(LipSDPError, TypeError):
    """A torch module (or IR op) has no exporter / quadratic constraint.  Lists every offender."""


class ModelLoadError(LipSDPError, OSError):
    """A weight file is missing, unreadable, truncated or of an unknown format."""


class SolverError(LipSDPError, RuntimeError):
    """A solver failed, returned no usable point, or an unknown solver name was given."""


class SolverNotAvailableError(SolverError):
    """An optional solver is not installed or not licensed."""


class FormulationError(LipSDPError, ValueError):
    """The requested formulation is invalid for this network (e.g. unsound multipliers)."""


class MemoryLimitError(LipSDPError, MemoryError):
    """The estimated memory of a formulation exceeds the configured limit."""


class CertificateError(LipSDPError, RuntimeError):
    """A certificate could not be verified."""
