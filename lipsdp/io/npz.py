"""numpy ``.npz`` weight files (``allow_pickle=False`` always): ``W<k>`` / ``weights_<k>``, optional
biases ``b<k>`` / ``biases_<k>``, a stored ``activation``, ``group_size`` and Householder ``vectors``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from .common import FileWeights, _short

__all__ = ["read_npz"]

_NPZ_WEIGHT = re.compile(r"^(?:W|weights_)(\d+)$")
_NPZ_BIAS = re.compile(r"^(?:b|biases_)(\d+)$")


def _scalar_str(value, key: str, path: Path) -> str:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "US":
        raise ModelLoadError(f"{path}: key {key!r} must be a scalar string, got dtype {arr.dtype} shape {arr.shape}")
    item = arr.reshape(()).item()
    return item.decode() if isinstance(item, bytes) else str(item)


def _scalar_int(value, key: str, path: Path) -> int:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iuf" or float(arr.reshape(())) != int(arr.reshape(())):
        raise ModelLoadError(f"{path}: key {key!r} must be a scalar integer, got {arr.dtype} shape {arr.shape}")
    return int(arr.reshape(()))


def _indexed(found: dict[int, object], what: str, path: Path) -> list:
    idx = sorted(found)
    if idx != list(range(len(idx))):
        raise ModelLoadError(
            f"{path}: {what} indices must be 0, 1, ..., {len(idx) - 1} without gaps, got {idx}"
        )
    return [found[i] for i in idx]


def read_npz(path: Path, allow_pickle: bool = False) -> FileWeights:
    """A numpy ``.npz`` of plain arrays (never unpickled): ``W0, W1, ...``, optional biases and options."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise ModelLoadError(
            f"{path}: not an .npz archive (an .npz is a zip of .npy arrays, written by numpy.savez); "
            "save the weights with numpy.savez(path, W0=..., W1=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ModelLoadError(
                f"{path}: the .npz holds pickled objects, which are never loaded; store plain numeric "
                "arrays (and the activation as a numpy string array)"
            ) from None
        raise ModelLoadError(f"{path}: not a readable .npz file ({_short(exc)})") from None
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable .npz file ({_short(exc)})") from None
    ws: dict[int, np.ndarray] = {}
    bs: dict[int, np.ndarray] = {}
    styles = set()
    for key, arr in arrays.items():
        m = _NPZ_WEIGHT.match(key)
        if m:
            styles.add(key[0])
            ws[int(m.group(1))] = arr
            continue
        m = _NPZ_BIAS.match(key)
        if m:
            bs[int(m.group(1))] = arr
    if not ws:
        raise ModelLoadError(
            f"{path}: no weight arrays found; expected keys W0, W1, ... (or weights_0, weights_1, ...), "
            f"found {sorted(arrays)}"
        )
    if len(styles) > 1:
        raise ModelLoadError(f"{path}: mixes 'W<k>' and 'weights_<k>' keys; use one naming style")
    mats = _indexed(ws, "weight", path)
    extra = sorted(i for i in bs if i >= len(mats))
    if extra:
        raise ModelLoadError(f"{path}: bias indices {extra} have no matching weight (there are {len(mats)} weights)")
    biases = [bs.get(k) for k in range(len(mats))] if bs else None
    activation = _scalar_str(arrays["activation"], "activation", path) if "activation" in arrays else None
    options = {}
    if "group_size" in arrays:
        options["group_size"] = _scalar_int(arrays["group_size"], "group_size", path)
    if "vectors" in arrays:
        options["vectors"] = arrays["vectors"]
    else:
        vs = {int(k.split("_")[1]): v for k, v in arrays.items() if re.match(r"^vectors_\d+$", k)}
        if vs:
            options["vectors"] = _indexed(vs, "vectors", path)
    return FileWeights(mats, biases, activation, options)
