"""The network intermediate representation (IR): torch-free, explicit, validated once.

A :class:`Network` is a sequence of layers

    Affine, Activation, Affine, Activation, ..., Affine          (feedforward)

optionally with :class:`Residual` blocks ``x -> x + body(x)`` between two affine maps.  Each
activation layer carries what its quadratic constraint (QC) needs: slope bounds [α, β] per
neuron (:class:`SlopeRestricted`), a group size (:class:`GroupSort`, MaxMin = group size 2) or
one unit vector per group (:class:`Householder`).  Groups are always *contiguous* in the IR:
neurons ``[g*i, g*(i+1))`` form group ``i``; exporters permute to reach that convention.

Everything is float64 numpy.  Biases are kept (forward passes need them) but never enter a
global Lipschitz bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import special

from .errors import InvalidNetworkError
from .linop import as_linop, compose

__all__ = [
    "Affine",
    "Activation",
    "SlopeRestricted",
    "GroupSort",
    "MaxMin",
    "Householder",
    "Residual",
    "Network",
    "SLOPE_FUNCTIONS",
]


def _as_float_array(x, what: str, ndim: int) -> np.ndarray:
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidNetworkError(f"{what}: expected a numeric array, got {type(x).__name__} ({exc})") from None
    if arr.ndim != ndim:
        raise InvalidNetworkError(f"{what}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidNetworkError(f"{what}: is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InvalidNetworkError(f"{what}: contains {bad} NaN/Inf value(s); only finite weights can be certified")
    arr.setflags(write=False)
    return arr


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Affine:
    """x -> W x + b with W an (out × in) :class:`~lipsdp.linop.LinearOp` (the torch
    ``nn.Linear.weight`` orientation).

    The first argument may be an array, a scipy sparse matrix or a LinearOp (e.g.
    :class:`lipsdp.linop.Conv`, which stays a convolution); it is stored as the operator ``op``.
    ``weight`` returns it as a dense array (densifies structured operators: use ``op`` in code
    that must scale).
    """

    op: object
    bias: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        label = f"affine layer {self.name!r}" if self.name else "affine layer"
        op = as_linop(self.op, f"{label} weight")
        object.__setattr__(self, "op", op)
        if self.bias is not None:
            b = _as_float_array(np.ravel(self.bias), f"{label} bias", 1)
            if b.shape[0] != op.shape[0]:
                raise InvalidNetworkError(
                    f"{label}: bias has {b.shape[0]} entries but the weight has {op.shape[0]} rows"
                )
            object.__setattr__(self, "bias", b)

    @property
    def weight(self) -> np.ndarray:
        """The dense weight matrix (a copy for structured operators)."""
        return self.op.to_dense()

    @property
    def in_dim(self) -> int:
        return self.op.shape[1]

    @property
    def out_dim(self) -> int:
        return self.op.shape[0]

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        y = self.op.matvec(x.T).T
        return y if self.bias is None else y + self.bias


class Activation:
    """Base of the activation ops.  ``size`` is the number of neurons (set by :class:`Network`).

    Subclasses implement ``forward(v)`` on a batch (rows = samples) and ``jacobian(v)`` for one
    pre-activation vector, both in numpy, so lower bounds need no torch.
    """

    kind: str = "activation"
    name: str = ""
    size: int | None = None

    def with_size(self, n: int) -> "Activation":  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, v: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def jacobian(self, v: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    @property
    def lipschitz(self) -> float:
        """ℓ2 Lipschitz constant of the activation map itself (for naive bounds)."""
        return 1.0

    @property
    def lipschitz_inf(self) -> float:
        """ℓ∞ → ℓ∞ Lipschitz constant of the activation map (for naive ℓ∞ bounds); default from the
        ℓ2 one: ‖·‖_∞ ≤ ‖·‖_2 ≤ √n ‖·‖_∞."""
        return float(self.lipschitz) * float(np.sqrt(self.size or 1))


# --- slope-restricted, elementwise ---------------------------------------------------------------


def _gelu(v):
    return 0.5 * v * (1.0 + special.erf(v / np.sqrt(2.0)))


def _gelu_d(v):
    return 0.5 * (1.0 + special.erf(v / np.sqrt(2.0))) + v * np.exp(-0.5 * v * v) / np.sqrt(2 * np.pi)


def _silu_d(v):
    s = special.expit(v)
    return s * (1 + v * (1 - s))


def _softplus(v, beta=1.0, threshold=20.0):
    bv = beta * v
    return np.where(bv > threshold, v, np.logaddexp(0.0, bv) / beta)


def _softplus_d(v, beta=1.0, threshold=20.0):
    bv = beta * v
    return np.where(bv > threshold, 1.0, special.expit(bv))


def _extreme_slopes(derivative: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """Extremes of φ' for the non-monotone smooth activations, found numerically.

    A dense grid locates the extremes; a bounded scalar minimisation polishes each one.  The
    result is widened by 1e-12 so the interval contains the true extremes.
    """
    from scipy.optimize import minimize_scalar

    grid = np.linspace(-20, 20, 400001)
    d = derivative(grid)
    out = []
    for sign, idx in ((1.0, int(np.argmin(d))), (-1.0, int(np.argmax(d)))):
        x0 = grid[idx]
        res = minimize_scalar(lambda t: sign * float(derivative(np.array(t))), bounds=(x0 - 1e-3, x0 + 1e-3), method="bounded",
                              options={"xatol": 1e-14})
        out.append(min(sign * res.fun, sign * d[idx]) if sign > 0 else max(-res.fun, d[idx]))
    lo, hi = out
    return float(lo) - 1e-12, float(hi) + 1e-12


#: name -> (forward(v, **p), derivative(v, **p), slope interval(**p) -> (alpha, beta))
SLOPE_FUNCTIONS: dict[str, tuple[Callable, Callable, Callable]] = {
    "relu": (lambda v: np.maximum(v, 0.0), lambda v: (v > 0).astype(float), lambda: (0.0, 1.0)),
    "leaky_relu": (
        lambda v, negative_slope=0.01: np.where(v > 0, v, negative_slope * v),
        lambda v, negative_slope=0.01: np.where(v > 0, 1.0, negative_slope),
        lambda negative_slope=0.01: (min(negative_slope, 1.0), max(negative_slope, 1.0)),
    ),
    "tanh": (np.tanh, lambda v: 1.0 - np.tanh(v) ** 2, lambda: (0.0, 1.0)),
    "sigmoid": (special.expit, lambda v: special.expit(v) * (1 - special.expit(v)), lambda: (0.0, 0.25)),
    "elu": (
        lambda v, alpha=1.0: np.where(v > 0, v, alpha * np.expm1(np.minimum(v, 0.0))),
        lambda v, alpha=1.0: np.where(v > 0, 1.0, alpha * np.exp(np.minimum(v, 0.0))),
        lambda alpha=1.0: (min(0.0, alpha), max(1.0, alpha)),
    ),
    "softplus": (_softplus, _softplus_d, lambda beta=1.0, threshold=20.0: (0.0, 1.0)),
    "silu": (lambda v: v * special.expit(v), _silu_d, lambda: _extreme_slopes(_silu_d)),
    "gelu": (_gelu, _gelu_d, lambda: _extreme_slopes(_gelu_d)),
    "hardtanh": (
        lambda v, min_val=-1.0, max_val=1.0: np.clip(v, min_val, max_val),
        lambda v, min_val=-1.0, max_val=1.0: ((v > min_val) & (v < max_val)).astype(float),
        lambda min_val=-1.0, max_val=1.0: (0.0, 1.0),
    ),
    "identity": (lambda v: v, lambda v: np.ones_like(v), lambda: (1.0, 1.0)),
}


@dataclass(frozen=True, eq=False)
class SlopeRestricted(Activation):
    """Elementwise φ with slope in [α_i, β_i] for neuron i:  α_i ≤ (φ(a) − φ(b))/(a − b) ≤ β_i.

    ``fn`` names the function in :data:`SLOPE_FUNCTIONS` (used for forward passes and lower
    bounds); ``params`` its keyword parameters.  ``alpha``/``beta`` may be scalars; the network
    broadcasts them to one value per neuron.  Fazlyab et al., NeurIPS 2019, §2.

    ``channels``: the number of channels when the neurons are a (C, H, W) feature map (channel c
    = neurons [c·HW, (c+1)·HW)); :class:`Network` sets it after a convolution.  Only
    ``method="channel"`` reads it (one multiplier per channel); None = no channel layout.
    """

    fn: str = "relu"
    alpha: np.ndarray | float | None = None
    beta: np.ndarray | float | None = None
    params: dict = field(default_factory=dict)
    name: str = ""
    size: int | None = None
    channels: int | None = None
    kind = "slope"

    def __post_init__(self):
        if self.fn not in SLOPE_FUNCTIONS:
            raise InvalidNetworkError(
                f"activation {self.name or self.fn!r}: unknown function {self.fn!r}; known: {sorted(SLOPE_FUNCTIONS)}"
            )
        lo, hi = SLOPE_FUNCTIONS[self.fn][2](**self.params)
        alpha = lo if self.alpha is None else self.alpha
        beta = hi if self.beta is None else self.beta
        label = f"activation {self.name!r}" if self.name else f"{self.fn} activation"
        alpha = np.array(alpha, dtype=float).ravel()
        beta = np.array(beta, dtype=float).ravel()
        if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))):
            raise InvalidNetworkError(f"{label}: slope bounds must be finite")
        if self.size is not None:
            for what, arr in (("alpha", alpha), ("beta", beta)):
                if arr.size not in (1, self.size):
                    raise InvalidNetworkError(f"{label}: {what} has {arr.size} entries, expected 1 or {self.size}")
            alpha = np.broadcast_to(alpha, (self.size,)).copy()
            beta = np.broadcast_to(beta, (self.size,)).copy()
        if np.any(alpha > beta):
            raise InvalidNetworkError(f"{label}: slope bounds need alpha <= beta, got alpha={alpha.max()} > beta")
        if self.channels is not None:
            c = self.channels
            if isinstance(c, bool) or int(c) != c or c < 1 or (self.size is not None and self.size % int(c)):
                raise InvalidNetworkError(f"{label}: channels={c!r} must be a positive integer dividing the "
                                          f"{self.size} neurons (channel-major (C, H, W) order)")
            object.__setattr__(self, "channels", int(c))
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    def with_size(self, n: int, channels: int | None = None) -> "SlopeRestricted":
        """A copy sized for ``n`` neurons; ``channels`` (if given) replaces the channel layout."""
        return SlopeRestricted(self.fn, self.alpha, self.beta, dict(self.params), self.name, n,
                               self.channels if channels is None else channels)

    def forward(self, v):
        return SLOPE_FUNCTIONS[self.fn][0](v, **self.params)

    def jacobian(self, v):
        return np.diag(SLOPE_FUNCTIONS[self.fn][1](v, **self.params))

    def describe(self) -> str:
        return self.fn

    @property
    def lipschitz(self) -> float:
        return float(np.max(np.maximum(np.abs(self.alpha), np.abs(self.beta))))

    @property
    def lipschitz_inf(self) -> float:
        return self.lipschitz  # elementwise


# --- GroupSort / MaxMin ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GroupSort(Activation):
    """Sort each contiguous group of ``group_size`` neurons in *descending* order.

    MaxMin is ``group_size = 2``: (a, b) -> (max(a, b), min(a, b)).  Each group map is
    1-Lipschitz in ℓ2 and sum-preserving (Pauli et al., ICLR 2024, Lemma 1).
    """

    group_size: int = 2
    name: str = ""
    size: int | None = None
    kind = "groupsort"

    def __post_init__(self):
        label = f"activation {self.name!r}" if self.name else "GroupSort activation"
        if int(self.group_size) != self.group_size or self.group_size < 2:
            raise InvalidNetworkError(f"{label}: group_size must be an integer >= 2, got {self.group_size}")
        object.__setattr__(self, "group_size", int(self.group_size))
        if self.size is not None and self.size % self.group_size:
            raise InvalidNetworkError(
                f"{label}: {self.size} neurons cannot be split into groups of {self.group_size}"
            )

    def with_size(self, n):
        return type(self)(group_size=self.group_size, name=self.name, size=n)

    @property
    def n_groups(self) -> int:
        return self.size // self.group_size

    def forward(self, v):
        g = self.group_size
        shp = v.shape
        return -np.sort(-v.reshape(*shp[:-1], -1, g), axis=-1).reshape(shp)

    def jacobian(self, v):
        g = self.group_size
        order = np.argsort(-v.reshape(-1, g), axis=1, kind="stable")
        J = np.zeros((v.size, v.size))
        for i, row in enumerate(order):
            J[i * g + np.arange(g), i * g + row] = 1.0
        return J

    def describe(self):
        return "maxmin" if self.group_size == 2 else f"groupsort{self.group_size}"

    @property
    def lipschitz_inf(self) -> float:
        return 1.0  # sorting is non-expansive in every ℓp


def MaxMin(name: str = "", size: int | None = None) -> GroupSort:
    """MaxMin = GroupSort with groups of 2 (adjacent pairs)."""
    return GroupSort(2, name=name, size=size)


# --- Householder ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Householder(Activation):
    """Per contiguous group i with unit vector v_i:  z -> z if v_i^T z > 0 else (I − 2 v_i v_i^T) z.

    ``vectors`` has shape (groups, group_size) or (group_size,) (one v shared by all groups);
    rows are normalised.  1-Lipschitz; (I − v v^T) φ(z) = (I − v v^T) z (Pauli et al., ICLR
    2024, Lemma 2).  v = (1, −1)/√2 gives MaxMin.
    """

    vectors: np.ndarray = None
    name: str = ""
    size: int | None = None
    kind = "householder"

    def __post_init__(self):
        label = f"activation {self.name!r}" if self.name else "Householder activation"
        if self.vectors is None:
            raise InvalidNetworkError(f"{label}: needs the unit vectors v (one per group)")
        V = np.array(self.vectors, dtype=float)
        if V.ndim == 1:
            V = V[None, :]
        if V.ndim != 2 or V.shape[1] < 2 or not np.all(np.isfinite(V)):
            raise InvalidNetworkError(f"{label}: vectors must be a finite (groups, group_size>=2) array, got shape {V.shape}")
        norms = np.linalg.norm(V, axis=1)
        if np.any(norms == 0):
            raise InvalidNetworkError(f"{label}: a Householder vector is zero")
        V = V / norms[:, None]
        if self.size is not None:
            g = V.shape[1]
            if self.size % g:
                raise InvalidNetworkError(f"{label}: {self.size} neurons cannot be split into groups of {g}")
            G = self.size // g
            if V.shape[0] == 1 and G > 1:
                V = np.repeat(V, G, axis=0)
            if V.shape[0] != G:
                raise InvalidNetworkError(f"{label}: {V.shape[0]} vectors for {G} groups of {g}")
        V.setflags(write=False)
        object.__setattr__(self, "vectors", V)

    @property
    def group_size(self) -> int:
        return self.vectors.shape[1]

    @property
    def n_groups(self) -> int:
        return self.size // self.group_size

    def with_size(self, n):
        return Householder(self.vectors, self.name, n)

    @property
    def lipschitz_inf(self) -> float:
        """Continuous piecewise linear: the max over the pieces {I, I − 2vv^T} of ‖·‖_{∞→∞}."""
        worst = 1.0
        for v in self.vectors:
            R = np.eye(v.size) - 2 * np.outer(v, v)
            worst = max(worst, float(np.max(np.abs(R).sum(axis=1))))
        return worst

    def forward(self, v):
        g = self.group_size
        shp = v.shape
        z = v.reshape(*shp[:-1], -1, g)
        proj = np.einsum("...ij,ij->...i", z, self.vectors)
        refl = z - 2 * proj[..., None] * self.vectors
        return np.where(proj[..., None] > 0, z, refl).reshape(shp)

    def jacobian(self, v):
        g = self.group_size
        z = v.reshape(-1, g)
        J = np.zeros((v.size, v.size))
        for i, (zi, vi) in enumerate(zip(z, self.vectors)):
            blk = np.eye(g) if zi @ vi > 0 else np.eye(g) - 2 * np.outer(vi, vi)
            J[i * g:(i + 1) * g, i * g:(i + 1) * g] = blk
        return J


# --- Residual -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Residual:
    """x -> x + body(x), with ``body`` = (Affine, Activation[, Affine]) (math.md §7)."""

    body: tuple
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "body", tuple(self.body))

    @property
    def dim(self) -> int:
        return self.body[0].in_dim

    def forward(self, x):
        y = x
        for layer in self.body:
            y = layer.forward(y)
        return x + y


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


def _sized(act: Activation, n: int, shape) -> Activation:
    """``act`` sized for ``n`` neurons; a slope-restricted one after a convolution (``shape`` =
    (C, *spatial)) also learns its channel count, unless it was given one."""
    if isinstance(act, SlopeRestricted) and act.channels is None and shape is not None:
        return act.with_size(n, int(shape[0]))
    return act.with_size(n)


class Network:
    """A validated network: a tuple of :class:`Affine`, :class:`Activation` and
    :class:`Residual` layers.

    Validation (once, here): at least one affine map; first and last layers affine; no two
    activations in a row; dimensions chain; every value finite; slope bounds α ≤ β.
    Consecutive affine maps are merged (W2 (W1 x + b1) + b2).  Errors name the layer.
    """

    def __init__(self, layers: Sequence, name: str = ""):
        self.name = name
        layers = list(layers)
        if not layers:
            raise InvalidNetworkError("the network is empty: expected at least one affine (linear) layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, (Affine, Activation, Residual)):
                raise InvalidNetworkError(
                    f"layer {i}: expected an Affine, Activation or Residual, got {type(layer).__name__}"
                )
        merged: list = []
        shapes: list = []  # per merged layer: an affine output's (C, *spatial) layout, if known
        for layer in layers:
            shape = getattr(getattr(layer, "op", None), "out_shape", None)
            if isinstance(layer, Affine) and merged and isinstance(merged[-1], Affine):
                prev = merged.pop()
                shapes.pop()
                if prev.out_dim != layer.in_dim:
                    raise InvalidNetworkError(
                        f"layer {layer.name or len(merged)!r}: expects {layer.in_dim} inputs but "
                        f"{prev.name or 'the previous layer'!r} gives {prev.out_dim}"
                    )
                bias = None
                if prev.bias is not None or layer.bias is not None:
                    b1 = prev.bias if prev.bias is not None else np.zeros(prev.out_dim)
                    bias = layer.op.matvec(b1) + (layer.bias if layer.bias is not None else 0.0)
                name = "+".join(n for n in (prev.name, layer.name) if n)
                layer = Affine(compose(layer.op, prev.op), bias, name)
            merged.append(layer)
            shapes.append(shape)
        if not isinstance(merged[0], Affine):
            raise InvalidNetworkError(f"the first layer must be affine (linear), got {type(merged[0]).__name__}")
        if not isinstance(merged[-1], Affine):
            raise InvalidNetworkError(
                f"the last layer must be affine (linear), got {type(merged[-1]).__name__}; "
                "a network that ends in an activation can be followed by an identity Affine"
            )
        dim = merged[0].in_dim
        sized: list = []
        for i, layer in enumerate(merged):
            label = getattr(layer, "name", "") or f"#{i}"
            if isinstance(layer, Affine):
                if layer.in_dim != dim:
                    raise InvalidNetworkError(f"layer {label!r}: expects {layer.in_dim} inputs but receives {dim}")
                dim = layer.out_dim
            elif isinstance(layer, Activation):
                if isinstance(sized[-1], Activation):
                    raise InvalidNetworkError(f"layer {label!r}: two activations in a row")
                layer = _sized(layer, dim, shapes[i - 1])
            else:  # Residual
                layer = self._check_residual(layer, dim, label)
            sized.append(layer)
        self.layers: tuple = tuple(sized)

    @staticmethod
    def _check_residual(block: Residual, dim: int, label: str) -> Residual:
        body = list(block.body)
        if not (2 <= len(body) <= 3) or not isinstance(body[0], Affine) or not isinstance(body[1], Activation) or (
            len(body) == 3 and not isinstance(body[2], Affine)
        ):
            raise InvalidNetworkError(
                f"residual block {label!r}: body must be (Affine, Activation) or (Affine, Activation, Affine)"
            )
        if body[0].in_dim != dim:
            raise InvalidNetworkError(f"residual block {label!r}: expects {body[0].in_dim} inputs but receives {dim}")
        body[1] = _sized(body[1], body[0].out_dim, getattr(body[0].op, "out_shape", None))
        out = body[2].out_dim if len(body) == 3 else body[0].out_dim
        if len(body) == 3 and body[2].in_dim != body[0].out_dim:
            raise InvalidNetworkError(f"residual block {label!r}: inner affine maps do not chain")
        if out != dim:
            raise InvalidNetworkError(f"residual block {label!r}: body returns {out} values for a {dim}-dim skip")
        return Residual(tuple(body), block.name)

    # --- structure ---------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return self.layers[0].in_dim

    @property
    def output_dim(self) -> int:
        return self.layers[-1].out_dim

    @property
    def is_feedforward(self) -> bool:
        return not any(isinstance(layer, Residual) for layer in self.layers)

    @property
    def affines(self) -> list[Affine]:
        return [layer for layer in self.layers if isinstance(layer, Affine)]

    @property
    def activations(self) -> list[Activation]:
        return [layer for layer in self.layers if isinstance(layer, Activation)]

    @property
    def weights(self) -> list[np.ndarray]:
        """The affine maps as dense arrays (densifies structured operators; see :attr:`ops`)."""
        return [a.weight for a in self.affines]

    @property
    def ops(self) -> list:
        """The affine maps as :class:`~lipsdp.linop.LinearOp` (structured operators kept)."""
        return [a.op for a in self.affines]

    @property
    def dims(self) -> list[int]:
        """[n_0, n_1, ..., n_l, n_out] for a feedforward network."""
        return [self.input_dim] + [a.out_dim for a in self.affines]

    def __repr__(self):
        parts = []
        for layer in self.layers:
            if isinstance(layer, Affine):
                parts.append(f"Affine({layer.in_dim}->{layer.out_dim})")
            elif isinstance(layer, Residual):
                parts.append(f"Residual({layer.dim})")
            else:
                parts.append(layer.describe())
        return f"Network({', '.join(parts)})"

    # --- numerics ----------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Forward pass on a batch (rows = samples) or a single vector."""
        y = np.asarray(x, dtype=float)
        for layer in self.layers:
            y = layer.forward(y)
        return y

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """Jacobian of the network at one input vector x (output_dim × input_dim)."""
        y = np.asarray(x, dtype=float).ravel()
        J = np.eye(self.input_dim)
        for layer in self.layers:
            if isinstance(layer, Affine):
                J = layer.op.matvec(J)
                y = layer.forward(y)
            elif isinstance(layer, Activation):
                J = layer.jacobian(y) @ J
                y = layer.forward(y)
            else:
                Jb = np.eye(layer.dim)
                yb = y
                for inner in layer.body:
                    if isinstance(inner, Affine):
                        Jb = inner.op.matvec(Jb)
                    else:
                        Jb = inner.jacobian(yb) @ Jb
                    yb = inner.forward(yb)
                J = (np.eye(layer.dim) + Jb) @ J
                y = y + yb
        return J

    def with_weights(self, transform: Callable[[int, Affine], Affine]) -> "Network":
        """A copy with each top-level affine layer replaced by ``transform(index, affine)``."""
        out, k = [], 0
        for layer in self.layers:
            if isinstance(layer, Affine):
                layer = transform(k, layer)
                k += 1
            out.append(layer)
        return Network(out, self.name)
