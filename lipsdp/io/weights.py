"""The feedforward :class:`~lipsdp.ir.Network` ``W_L φ(... φ(W_0 x + b_0) ...) + b_L`` from weight
matrices (torch orientation (out, in)) and a hidden-activation name: :func:`from_weights`.

Every shape, value and activation option is validated here, once; a malformed input raises
:class:`~lipsdp.errors.InvalidNetworkError` naming the layer index.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InvalidNetworkError
from ..ir import SLOPE_FUNCTIONS, Activation, Affine, GroupSort, Householder, Network, SlopeRestricted

__all__ = ["from_weights", "ACTIVATION_NAMES"]

#: activation names accepted by :func:`from_weights` (besides an ``ir.Activation`` instance)
ACTIVATION_NAMES = tuple(sorted(SLOPE_FUNCTIONS)) + ("maxmin", "groupsort", "householder")


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
