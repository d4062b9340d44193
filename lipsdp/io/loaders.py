"""Weight files to a :class:`~lipsdp.ir.Network`: :func:`load` checks the path, picks the reader
registered for the file's extension (:data:`LOADERS`, extended with :func:`register_loader`) and
builds the network with :func:`~lipsdp.io.from_weights` from what the reader found.

A reader is ``read(path, allow_pickle) -> FileWeights | Network``: a :class:`FileWeights` when the
file holds weight matrices (the activation then comes from the caller or the file), a finished
network when the file defines its own graph (ONNX, a pickled ``nn.Module``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import ModelLoadError
from ..ir import Network
from .common import FileWeights, _short
from .mat import read_mat
from .npz import read_npz
from .torch_files import read_torch
from .weights import from_weights

__all__ = ["load", "register_loader", "LOADERS", "SUPPORTED_EXTENSIONS"]


def read_onnx(path: Path, allow_pickle: bool = False) -> Network:
    """An ONNX graph read op by op into the IR (:mod:`lipsdp.io_onnx`; needs the ``onnx`` extra)."""
    from ..io_onnx import load_onnx

    return load_onnx(path)


#: file extension (lower case, with the dot) → reader ``read(path, allow_pickle)``
LOADERS: dict[str, Callable[[Path, bool], "FileWeights | Network"]] = {
    ".mat": read_mat,
    ".npz": read_npz,
    ".pt": read_torch,
    ".pth": read_torch,
    ".onnx": read_onnx,
}

#: the file extensions :func:`load` understands out of the box (``tuple(LOADERS)`` lists any added since)
SUPPORTED_EXTENSIONS = tuple(LOADERS)


def register_loader(extension: str, read: Callable[[Path, bool], "FileWeights | Network"]) -> None:
    """Make :func:`load` read files ending in ``extension`` (e.g. ``".h5"``) with ``read(path, allow_pickle)``."""
    ext = str(extension).lower()
    if not ext.startswith(".") or len(ext) < 2:
        raise ValueError(f"register_loader: expected an extension such as '.h5', got {extension!r}")
    if not callable(read):
        raise TypeError(f"register_loader: expected a callable read(path, allow_pickle), got {type(read).__name__}")
    LOADERS[ext] = read


def load(
    path,
    activation=None,
    allow_pickle: bool = False,
    group_size: int | None = None,
    vectors=None,
) -> Network:
    """Read a weight file and build a :class:`~lipsdp.ir.Network` (see :func:`from_weights`).

    Formats (chosen by extension, :data:`LOADERS`):

    ``.mat`` (scipy.io.loadmat, MATLAB v5/v7)
        A variable ``weights`` (LipSDP) or ``W`` (LipSDP-NSR / QCs_MaxMin): a 1×L cell array of
        matrices in (out, in) orientation; a plain 2-D matrix is a one-layer net.  No biases are
        read.  The activation is the caller's choice (default ReLU; pass ``activation="maxmin"``
        for the QCs_MaxMin networks).
    ``.npz`` (numpy, ``allow_pickle=False`` always)
        ``W0, W1, ...`` or ``weights_0, weights_1, ...`` (contiguous from 0, one style);
        optional biases ``b0, b1, ...`` or ``biases_0, ...`` (any subset); optional scalar string
        ``activation``; optional scalar integer ``group_size``; optional ``vectors`` (shared
        Householder vectors) or ``vectors_0, vectors_1, ...`` (one per hidden layer).  Other keys
        (e.g. ``description``, ``test_accuracy``) are ignored.
    ``.pt`` / ``.pth`` (``torch.load(weights_only=True)``)
        A list/tuple of weight tensors; or a dict with ``weights`` (list) and optional
        ``biases`` (list, None entries allowed), ``activation`` (str), ``group_size`` (int); or
        the state_dict of an ``nn.Sequential`` of Linear layers (keys ``<i>.weight`` /
        ``<i>.bias`` only, 2-D weights, parameter-free layers between).  Any other state_dict
        is refused (key names do not define a network; use ``lipsdp.from_torch(model)``).  A
        whole pickled ``nn.Module`` is loaded only with ``allow_pickle=True`` (it runs code from
        the file) and is then exported with ``lipsdp.from_torch``.
    ``.onnx`` (needs ``pip install 'lipsdp[onnx]'``)
        An ONNX graph read op by op into the IR (:mod:`lipsdp.io_onnx`: Gemm / MatMul, Conv,
        pooling, BatchNormalization, Pad, normalisation by constants, Relu / LeakyRelu / Sigmoid /
        Tanh / Elu, reshapes).  The graph defines the activations; ``activation``,
        ``group_size`` and ``vectors`` are not used.

    Parameters
    ----------
    activation
        ``None`` (default): the activation stored in the file, else ``"relu"``.  A name that
        contradicts the file's stored activation raises; otherwise the caller's choice is used.
    allow_pickle
        Allow ``.pt`` files that hold arbitrary pickled objects.  Only for trusted files.
    group_size, vectors
        As in :func:`from_weights` (override the file's values).

    Raises
    ------
    ModelLoadError
        Missing file, a directory, an empty / truncated / corrupt file, an unknown extension, a
        file without the expected keys, or a pickled object without ``allow_pickle``.
    InvalidNetworkError
        The weights are malformed (shapes do not chain, NaN, ...).
    """
    path, ext = _checked_path(path)
    loaded = LOADERS[ext](path, allow_pickle)
    if not isinstance(loaded, tuple):  # the file defines its own network (ONNX, an nn.Module)
        return loaded
    return _network(loaded, path, activation, group_size, vectors)


def _checked_path(path) -> tuple[Path, str]:
    """(path, lower-case extension) of an existing, non-empty, readable file with a registered reader."""
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise ModelLoadError(f"expected a file path (str or os.PathLike), got {type(path).__name__}") from None
    known = ", ".join(LOADERS)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected a weight file ({known})")
    ext = path.suffix.lower()
    if ext not in LOADERS:
        raise ModelLoadError(f"{path}: unknown file type {ext or '(no extension)'!r}; supported: {known}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot be read ({_short(exc)})") from None
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"{path}: permission denied")
    return path, ext


def _network(loaded: FileWeights, path: Path, activation, group_size, vectors) -> Network:
    """:func:`from_weights` on what a reader found, the caller's activation and options first."""
    mats, biases, stored_act, options = loaded
    act = _resolve_activation(activation, stored_act, path)
    if group_size is not None:
        options["group_size"] = group_size
    if vectors is not None:
        options["vectors"] = vectors
    # values stored in the file only apply to the activation that uses them
    act_name = act.strip().lower() if isinstance(act, str) else None
    if group_size is None and act_name not in ("groupsort", "maxmin"):
        options.pop("group_size", None)
    if vectors is None and act_name != "householder":
        options.pop("vectors", None)
    return from_weights(mats, act, biases=biases, name=path.stem, **options)


def _resolve_activation(requested, stored, path: Path):
    """The caller's activation if given; else the file's; else "relu".  A conflict raises."""
    if stored is not None and requested is not None and isinstance(requested, str):
        if requested.strip().lower() != str(stored).strip().lower():
            raise ModelLoadError(
                f"{path}: the file says activation {str(stored)!r} but activation={requested!r} was passed; "
                "pass activation=None to use the file's activation (or fix the file)"
            )
    if requested is not None:
        return requested
    return "relu" if stored is None else str(stored)
