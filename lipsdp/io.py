"""Build a :class:`~lipsdp.ir.Network` from weight matrices or from a weight file.

Two entry points:

* :func:`from_weights` -- a list of matrices ``W_k`` (torch orientation, shape (out, in)) and
  the name of the hidden activation.  The network is
  ``x -> W_0 x + b_0 -> φ -> W_1 (.) + b_1 -> φ -> ... -> W_L (.) + b_L``.
* :func:`load` -- read a ``.mat``, ``.npz``, ``.pt`` / ``.pth`` file and call
  :func:`from_weights`, or an ``.onnx`` graph (:mod:`lipsdp.io_onnx`).  Nothing is ever written; pickled code is never run unless the caller
  opts in with ``allow_pickle=True``.

Torch is imported lazily, only to read ``.pt`` / ``.pth`` files.  Every failure to read a file
is one :class:`~lipsdp.errors.ModelLoadError`; malformed weights give
:class:`~lipsdp.errors.InvalidNetworkError` naming the layer index.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InvalidNetworkError, ModelLoadError
from .ir import SLOPE_FUNCTIONS, Activation, Affine, GroupSort, Householder, Network, SlopeRestricted

__all__ = ["from_weights", "load", "load_with_class", "parse_input_shape", "SUPPORTED_EXTENSIONS", "ACTIVATION_NAMES"]

#: file extensions :func:`load` understands
SUPPORTED_EXTENSIONS = (".mat", ".npz", ".pt", ".pth", ".onnx")

#: activation names accepted by :func:`from_weights` (besides an ``ir.Activation`` instance)
ACTIVATION_NAMES = tuple(sorted(SLOPE_FUNCTIONS)) + ("maxmin", "groupsort", "householder")


# ---------------------------------------------------------------------------------------------
# from_weights
# ---------------------------------------------------------------------------------------------


def _matrix(w, k: int) -> np.ndarray:
    try:
        arr = np.array(w, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidNetworkError(
            f"weight {k}: expected a numeric 2-D matrix, got {type(w).__name__} ({exc})"
        ) from None
    if arr.ndim != 2:
        raise InvalidNetworkError(
            f"weight {k}: expected a 2-D matrix of shape (out, in), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise InvalidNetworkError(f"weight {k}: is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InvalidNetworkError(
            f"weight {k}: contains {bad} NaN/Inf value(s); only finite weights can be certified"
        )
    return arr


def _bias(b, k: int, rows: int) -> np.ndarray | None:
    if b is None:
        return None
    try:
        arr = np.array(b, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidNetworkError(f"bias {k}: expected a numeric vector, got {type(b).__name__} ({exc})") from None
    if arr.ndim == 2 and 1 in arr.shape:  # column / row vectors from MATLAB
        arr = arr.ravel()
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise InvalidNetworkError(
            f"bias {k}: expected a vector of {rows} entries (the rows of weight {k}), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidNetworkError(f"bias {k}: contains NaN/Inf value(s)")
    return arr


def _activation_factory(activation, n_hidden: int, group_size, vectors):
    """Return a function k -> Activation for hidden layer k."""
    if isinstance(activation, Activation):
        if group_size is not None or vectors is not None:
            raise InvalidNetworkError(
                "group_size / vectors are only used with an activation *name*; "
                "they are already part of the Activation instance you passed"
            )
        return lambda k: activation
    if not isinstance(activation, str):
        raise InvalidNetworkError(
            f"activation: expected a name (one of {list(ACTIVATION_NAMES)}) or an lipsdp.ir.Activation, "
            f"got {type(activation).__name__}"
        )
    name = activation.strip().lower()
    if name not in ACTIVATION_NAMES:
        raise InvalidNetworkError(
            f"activation: unknown name {activation!r}; valid names are {list(ACTIVATION_NAMES)} "
            "(or pass an lipsdp.ir.Activation instance)"
        )
    if group_size is not None and name not in ("groupsort", "maxmin"):
        raise InvalidNetworkError(f"group_size is only used with activation='groupsort', not {activation!r}")
    if vectors is not None and name != "householder":
        raise InvalidNetworkError(f"vectors are only used with activation='householder', not {activation!r}")
    if name in SLOPE_FUNCTIONS:
        return lambda k: SlopeRestricted(name, name=f"act{k}")
    if name == "maxmin":
        if group_size not in (None, 2):
            raise InvalidNetworkError(f"activation 'maxmin' has group size 2, got group_size={group_size}")
        return lambda k: GroupSort(2, name=f"act{k}")
    if name == "groupsort":
        if group_size is None:
            raise InvalidNetworkError("activation 'groupsort' needs group_size (e.g. group_size=2 for MaxMin)")
        return lambda k: GroupSort(group_size, name=f"act{k}")
    # householder
    if vectors is None:
        raise InvalidNetworkError(
            "activation 'householder' needs vectors: one (groups, group_size) array per hidden layer "
            "(a list), or a single numpy array shared by all hidden layers"
        )
    if isinstance(vectors, (list, tuple)):
        if len(vectors) != n_hidden:
            raise InvalidNetworkError(
                f"householder vectors: a list must hold one array per hidden layer ({n_hidden}), "
                f"got {len(vectors)}; pass a single numpy array to share it between layers"
            )
        return lambda k: Householder(vectors[k], name=f"act{k}")
    return lambda k: Householder(vectors, name=f"act{k}")


def from_weights(
    weights: Sequence,
    activation="relu",
    biases: Sequence | None = None,
    group_size: int | None = None,
    vectors=None,
    name: str = "",
) -> Network:
    """Build the feedforward network ``W_L φ(... φ(W_1 φ(W_0 x + b_0) + b_1) ...) + b_L``.

    Parameters
    ----------
    weights
        Sequence of 2-D matrices ``W_k`` of shape (out_k, in_k) (the ``nn.Linear.weight``
        orientation); ``in_{k+1} = out_k``.  A single 2-D array is a one-layer (affine) network.
    activation
        The hidden activation, used after every matrix but the last: a key of
        :data:`lipsdp.ir.SLOPE_FUNCTIONS` ("relu", "tanh", ...), ``"maxmin"``, ``"groupsort"``
        (with ``group_size``), ``"householder"`` (with ``vectors``), or an
        :class:`lipsdp.ir.Activation` instance (used for every hidden layer).
    biases
        ``None`` or one entry per matrix; an entry may be ``None`` (no bias for that layer).
    group_size
        Group size for ``"groupsort"`` (contiguous groups).
    vectors
        Householder unit vectors: a list with one (groups, group_size) array per hidden layer,
        or a single array (shape (groups, g) or (g,)) reused for every hidden layer.
    name
        Name of the network.

    Raises
    ------
    InvalidNetworkError
        Bad shapes, non-2-D or empty matrices, NaN/Inf, a wrong number of biases, or an unknown
        activation name (the message lists the valid ones and names the layer index).
    """
    if isinstance(weights, np.ndarray) and weights.ndim == 2:
        weights = [weights]
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise InvalidNetworkError(
            f"weights: expected a list of 2-D matrices, got {type(weights).__name__}"
        )
    weights = list(weights)
    if not weights:
        raise InvalidNetworkError("weights: the list is empty; expected at least one 2-D matrix")
    mats = [_matrix(w, k) for k, w in enumerate(weights)]
    for k in range(1, len(mats)):
        if mats[k].shape[1] != mats[k - 1].shape[0]:
            raise InvalidNetworkError(
                f"weight {k}: has {mats[k].shape[1]} columns (inputs) but weight {k - 1} gives "
                f"{mats[k - 1].shape[0]} outputs (shapes {mats[k - 1].shape} then {mats[k].shape}); "
                "matrices must be in the torch orientation (out, in)"
            )
    if biases is None:
        bs = [None] * len(mats)
    else:
        biases = list(biases)
        if len(biases) != len(mats):
            raise InvalidNetworkError(
                f"biases: expected {len(mats)} entries (one per weight matrix, None allowed), got {len(biases)}"
            )
        bs = [_bias(b, k, m.shape[0]) for k, (b, m) in enumerate(zip(biases, mats))]
    make_act = _activation_factory(activation, len(mats) - 1, group_size, vectors)
    layers: list = []
    for k, (w, b) in enumerate(zip(mats, bs)):
        if k > 0:
            try:
                act = make_act(k - 1)
                act.with_size(mats[k - 1].shape[0])  # validate here to name the hidden layer
                layers.append(act)
            except InvalidNetworkError as exc:
                raise InvalidNetworkError(f"hidden layer {k - 1} (after weight {k - 1}): {exc}") from None
        layers.append(Affine(w, b, name=f"fc{k}"))
    try:
        return Network(layers, name=name)
    except InvalidNetworkError as exc:
        raise InvalidNetworkError(f"{exc} (while building the network from {len(mats)} weight matrices)") from None


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------

_NPZ_WEIGHT = re.compile(r"^(?:W|weights_)(\d+)$")
_NPZ_BIAS = re.compile(r"^(?:b|biases_)(\d+)$")
_SEQ_KEY = re.compile(r"^(\d+)\.(weight|bias)$")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def _load_mat(path: Path):
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
    return mats, None, None, {}


def _load_npz(path: Path):
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
    return mats, biases, activation, options


def _is_tensor(x) -> bool:
    return type(x).__name__ in ("Tensor", "Parameter") and hasattr(x, "detach")


def _to_numpy(t, what: str, path: Path):
    if _is_tensor(t):
        return t.detach().cpu().double().numpy()
    if isinstance(t, np.ndarray):
        return t
    raise ModelLoadError(f"{path}: {what}: expected a tensor, got {type(t).__name__}")


def _from_torch_object(obj, path: Path):
    """(weights, biases, activation, options) from what torch.load returned (no modules)."""
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise ModelLoadError(f"{path}: the file holds an empty list of weights")
        return [_to_numpy(t, f"entry {k}", path) for k, t in enumerate(obj)], None, None, {}
    if isinstance(obj, dict):
        if "weights" in obj:
            ws = obj["weights"]
            if not isinstance(ws, (list, tuple)) or not ws:
                raise ModelLoadError(f"{path}: key 'weights' must be a non-empty list of tensors")
            mats = [_to_numpy(t, f"weights[{k}]", path) for k, t in enumerate(ws)]
            biases = obj.get("biases")
            if biases is not None:
                if not isinstance(biases, (list, tuple)):
                    raise ModelLoadError(f"{path}: key 'biases' must be a list (None entries allowed)")
                biases = [None if b is None else _to_numpy(b, f"biases[{k}]", path) for k, b in enumerate(biases)]
            act = obj.get("activation")
            if act is not None and not isinstance(act, str):
                raise ModelLoadError(f"{path}: key 'activation' must be a string, got {type(act).__name__}")
            options = {}
            if obj.get("group_size") is not None:
                options["group_size"] = int(obj["group_size"])
            return mats, biases, act, options
        return _from_state_dict(obj, path)
    raise ModelLoadError(
        f"{path}: expected a list of weight tensors, a dict with key 'weights', or the state_dict of an "
        f"nn.Sequential of Linear layers; got {type(obj).__name__}"
    )


def _from_state_dict(sd: dict, path: Path):
    """Accept only the state_dict of an nn.Sequential of Linear layers (and parameter-free layers).

    A bare state_dict is ambiguous: key names do not say which tensors are layers or how they
    connect (a policy's ``log_std.weight`` is not a layer).  Anything unusual is refused.
    """
    hint = (
        "a bare state_dict is only accepted for an nn.Sequential of Linear layers (keys '0.weight', "
        "'0.bias', '2.weight', ...); export the model with lipsdp.from_torch(model) instead, or save "
        "{'weights': [W0, W1, ...], 'biases': [...], 'activation': 'relu'}"
    )
    if not sd:
        raise ModelLoadError(f"{path}: the file holds an empty dict; {hint}")
    odd = [k for k in sd if not (isinstance(k, str) and _SEQ_KEY.match(k))]
    if odd:
        raise ModelLoadError(f"{path}: unexpected state_dict keys {odd[:5]}; {hint}")
    ws: dict[int, np.ndarray] = {}
    bs: dict[int, np.ndarray] = {}
    for key, t in sd.items():
        i, kind = _SEQ_KEY.match(key).groups()
        arr = _to_numpy(t, key, path)
        if kind == "weight":
            if arr.ndim != 2:
                raise ModelLoadError(f"{path}: {key!r} has shape {tuple(arr.shape)}, not a Linear weight; {hint}")
            ws[int(i)] = arr
        else:
            bs[int(i)] = arr
    orphan = sorted(set(bs) - set(ws))
    if orphan:
        raise ModelLoadError(f"{path}: biases {orphan} have no matching weight; {hint}")
    idx = sorted(ws)
    adjacent = [(a, b) for a, b in zip(idx, idx[1:]) if b == a + 1]
    if adjacent:
        raise ModelLoadError(
            f"{path}: Linear layers {adjacent[0]} are adjacent in the Sequential, so no activation sits "
            f"between them and the layout cannot be inferred; {hint}"
        )
    return [ws[i] for i in idx], [bs.get(i) for i in idx], None, {}


def _load_torch(path: Path, allow_pickle: bool):
    try:
        import torch
    except ImportError:
        raise ModelLoadError(f"{path}: reading .pt/.pth files needs torch (pip install torch)") from None
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc).lower():
            raise ModelLoadError(f"{path}: not a readable torch file ({_short(exc)})") from None
        if not allow_pickle:
            raise ModelLoadError(
                f"{path}: the file holds pickled Python objects (e.g. a whole nn.Module); loading it would "
                "run code stored in the file. Save model.state_dict() or a list of weight tensors instead, "
                "or pass allow_pickle=True if you trust the file"
            ) from None
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ModelLoadError(f"{path}: not a readable torch file ({_short(exc2)})") from None
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable torch file ({_short(exc)})") from None
    if isinstance(obj, torch.nn.Module):
        return obj
    return _from_torch_object(obj, path)


def _module_to_network(module, path: Path) -> Network:
    try:
        from .models.export import from_torch
    except ImportError as exc:
        raise ModelLoadError(
            f"{path}: holds a torch nn.Module, which needs lipsdp.models.export.from_torch, "
            f"unavailable here ({_short(exc)})"
        ) from None
    return from_torch(module)


def load(
    path,
    activation=None,
    allow_pickle: bool = False,
    group_size: int | None = None,
    vectors=None,
) -> Network:
    """Read a weight file and build a :class:`~lipsdp.ir.Network` (see :func:`from_weights`).

    Formats (chosen by extension):

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
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise ModelLoadError(f"expected a file path (str or os.PathLike), got {type(path).__name__}") from None
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected a weight file ({', '.join(SUPPORTED_EXTENSIONS)})")
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise ModelLoadError(
            f"{path}: unknown file type {ext or '(no extension)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot be read ({_short(exc)})") from None
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"{path}: permission denied")

    if ext == ".onnx":
        from .io_onnx import load_onnx

        return load_onnx(path)
    if ext == ".mat":
        loaded = _load_mat(path)
    elif ext == ".npz":
        loaded = _load_npz(path)
    else:
        loaded = _load_torch(path, allow_pickle)
        if not isinstance(loaded, tuple):  # a torch nn.Module (allow_pickle=True)
            return _module_to_network(loaded, path)
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


# ---------------------------------------------------------------------------------------------
# a state dict plus the model class that defines it
# ---------------------------------------------------------------------------------------------


def parse_input_shape(value) -> tuple | None:
    """``"1,28,28"`` / ``[1, 28, 28]`` / ``784`` → a tuple of positive ints (None stays None)."""
    if value is None or value == "":
        return None
    parts = value.replace("(", "").replace(")", "").split(",") if isinstance(value, str) else (
        [value] if isinstance(value, int) else value)
    try:
        shape = tuple(int(str(p).strip()) for p in parts if str(p).strip() != "")
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(s < 1 for s in shape) or isinstance(value, bool):
        raise InvalidNetworkError(f"input shape: expected positive integers such as 1,28,28 (C,H,W) or 784, got {value!r}")
    return shape


def _import_class(spec: str):
    """``path/to/file.py:ClassName`` or ``package.module:ClassName`` → the class (runs that code)."""
    import importlib
    import importlib.util
    import sys

    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ModelLoadError(f"model class {spec!r}: expected path/to/file.py:ClassName or package.module:ClassName")
    if where.endswith(".py"):
        file = Path(where).expanduser()
        if not file.is_file():
            raise ModelLoadError(f"model class {spec!r}: no such file {str(file)!r}")
        mod_name = f"lipsdp_user_model_{abs(hash(str(file.resolve())))}"
        mspec = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[mod_name] = module
        try:
            mspec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            raise ModelLoadError(f"model class {spec!r}: importing {file} failed ({_short(exc)})") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ModelLoadError(f"model class {spec!r}: cannot import module {where!r} ({_short(exc)})") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ModelLoadError(f"model class {spec!r}: {where} defines no class {name!r}")
    return cls


def _model_args(model_args):
    """JSON text, a dict (keyword arguments) or a list (positional) → (args, kwargs)."""
    import json

    if model_args is None or model_args == "":
        return (), {}
    if isinstance(model_args, str):
        try:
            model_args = json.loads(model_args)
        except ValueError as exc:
            raise ModelLoadError(f"model arguments: not valid JSON ({exc}); e.g. '{{\"hidden\": 64}}'") from None
    if isinstance(model_args, dict):
        return (), model_args
    if isinstance(model_args, list):
        return tuple(model_args), {}
    raise ModelLoadError(f"model arguments: expected a JSON object (keyword arguments) or list, got {model_args!r}")


def load_with_class(path, model_class, model_args=None, input_shape=None) -> Network:
    """Build ``model_class(**model_args)``, load the state dict stored at ``path`` into it
    (``torch.load(weights_only=True)``, strict key match) and export it with
    :func:`lipsdp.from_torch`.

    ``model_class`` is ``path/to/file.py:ClassName`` or ``package.module:ClassName``: that code is
    imported and run, which the caller asked for explicitly.  The checkpoint itself is never
    unpickled beyond tensors.  A checkpoint dict with one key ``state_dict`` /
    ``model_state_dict`` holding the state dict is accepted too.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        import torch
    except ImportError:
        raise ModelLoadError(f"{path}: a model class needs torch (pip install torch)") from None
    cls = _import_class(model_class)
    args, kwargs = _model_args(model_args)
    try:
        module = cls(*args, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"model class {model_class!r}: {cls.__name__}(*{list(args)}, **{kwargs}) failed "
                             f"({_short(exc)}); pass its constructor arguments with --model-args JSON") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"model class {model_class!r}: {cls.__name__} is not a torch.nn.Module")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a state dict readable with weights_only=True ({_short(exc)})") from None
    if isinstance(sd, dict) and len(sd) == 1 and next(iter(sd)) in ("state_dict", "model_state_dict"):
        sd = next(iter(sd.values()))
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path}: expected a state dict (a dict of tensors), got {type(sd).__name__}")
    try:
        module.load_state_dict(sd, strict=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"{path}: the state dict does not fit {cls.__name__}: {detail}") from None
    module.eval()
    from .models.export import from_torch

    return from_torch(module, input_shape=parse_input_shape(input_shape))
