"""What every part of :mod:`lipsdp.batch` shares: its two exceptions, the lazy import of the
optional ``lipsdp[batch]`` dependencies, and the timestamp format of the results store."""

from __future__ import annotations

from datetime import datetime, timezone

from ..errors import LipSDPError

__all__ = ["ManifestError", "BatchError", "need", "now"]


class ManifestError(LipSDPError, ValueError):
    """The manifest is malformed; the message lists every bad row as ``FILE:LINE: problem``."""


class BatchError(LipSDPError, RuntimeError):
    """A batch cannot start (results store clash, cluster configuration, missing dependency)."""


def need(module: str):
    """Import ``module`` (an optional dependency) or raise :class:`BatchError` naming the extra."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise BatchError(
            f"lipsdp batch needs the package providing {module!r}, which is not installed; "
            "install the extra: pip install 'lipsdp[batch]'"
        ) from None


def now() -> str:
    """The current UTC time, ISO 8601 with milliseconds (the store's ``started_at`` / ``finished_at``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
