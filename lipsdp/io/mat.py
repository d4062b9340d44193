"""MATLAB ``.mat`` weight files (scipy.io.loadmat, v5/v7): the LipSDP and LipSDP-NSR cell arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from .common import FileWeights, _short

__all__ = ["read_mat"]


def read_mat(path: Path, allow_pickle: bool = False) -> FileWeights:
    """A MATLAB v5/v7 ``.mat`` with a 1×L cell array ``weights`` (LipSDP) or ``W`` (LipSDP-NSR)."""
    from scipy import io as sio

    with open(path, "rb") as fh:
        head = fh.read(128)
    if head[:4] == b"\x89HDF" or head[:128].find(b"MATLAB 7.3") >= 0:
        raise ModelLoadError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save with save(..., '-v7')"
        )
    try:
        data = sio.loadmat(str(path))
    except Exception as exc:  # scipy raises many types on corrupt files
        raise ModelLoadError(f"{path}: not a readable MATLAB .mat file ({_short(exc)})") from None
    key = "weights" if "weights" in data else "W" if "W" in data else None
    if key is None:
        found = sorted(k for k in data if not k.startswith("__"))
        raise ModelLoadError(
            f"{path}: expected a variable 'weights' (LipSDP) or 'W' (LipSDP-NSR), a 1xL cell array of "
            f"matrices; found variables {found}"
        )
    cell = data[key]
    if cell.dtype == object:
        if cell.ndim == 2 and min(cell.shape) > 1:
            raise ModelLoadError(f"{path}: variable {key!r} must be a 1xL cell array, got shape {cell.shape}")
        mats = [np.asarray(w) for w in cell.ravel()]
    elif cell.ndim == 2:
        mats = [cell]
    else:
        raise ModelLoadError(f"{path}: variable {key!r} must be a cell array of matrices, got {cell.dtype} {cell.shape}")
    if not mats:
        raise ModelLoadError(f"{path}: variable {key!r} is an empty cell array")
    return FileWeights(mats, None, None, {})
