"""What every weight-file reader shares: the :class:`FileWeights` it returns, and short error text."""

from __future__ import annotations

from typing import NamedTuple


class FileWeights(NamedTuple):
    """What a weight-list reader found: matrices, biases (or None), the stored activation (or
    None) and :func:`~lipsdp.io.from_weights` options stored in the file (``group_size``, ``vectors``)."""

    mats: list
    biases: list | None
    activation: str | None
    options: dict


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
