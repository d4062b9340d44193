"""Jacobian-norm ascent on the IR: the search behind the strong lower bounds of :mod:`lipsdp.lower`.

For a network f and an output selection C, the Lipschitz constant satisfies

    L_2  ≥ ‖C J(x)‖_2   and   L_∞→|c^T f|  ≥ ‖J(x)^T c‖_1        at every x where f is differentiable,

and at such an x the finite difference along the top right singular vector (ℓ2) or along
``sign(J^T c)`` (ℓ∞) reproduces that value for a small enough step, so a large Jacobian norm
becomes a true difference quotient.  This module maximises the Jacobian norm over x by
gradient ascent from many starts at once (batched numpy):

* ``σ(x) = u^T C J(x) v`` with (u, v) the top singular pair from a few warm-started power
  iterations (ℓ2), or with u = c and v = sign(J^T c) fixed at the current point (ℓ∞);
* ∇_x σ = Σ_k (∂z_k/∂x)^T g_k, where z_k is the pre-activation of layer k (of the true network)
  and g_k the derivative of u^T C J v with respect to z_k through the layer Jacobian D_k(z_k) —
  one forward, one tangent, two adjoint passes;
* piecewise-linear activations have D_k piecewise constant (zero gradient almost everywhere),
  so the ascent runs on a smoothed network at temperature T: ReLU' ≈ σ(z/T), the MaxMin
  switch ≈ σ((a − b)/T), the Householder reflection ≈ σ(v^T z/T); T is annealed towards 0
  relative to each layer's pre-activation scale;  smooth activations use their own φ' and a
  central-difference φ''.

Nothing here is a bound by itself: the points it returns are turned into real finite
differences by :func:`lipsdp.lower.lower_bound`, which reports only those (a true quotient).
GroupSort with groups larger than 2 keeps its hard permutation (no gradient through the
order; the random starts still explore it).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from .ir import Activation, Affine, GroupSort, Householder, Network, Residual, SLOPE_FUNCTIONS, SlopeRestricted

__all__ = ["jacobian_ascent"]


# ---------------------------------------------------------------------------------------------
# layer linearisations (batched: rows = samples)
# ---------------------------------------------------------------------------------------------


def _temperature(tau, values):
    """Smoothing temperature per sample: tau × the mean |value| of the layer (a fixed schedule in x)."""
    return tau * (np.mean(np.abs(values), axis=1, keepdims=True) + 1e-30)


def _phi2(fn, params, Z, h=1e-5):
    d = SLOPE_FUNCTIONS[fn][1]
    return (d(Z + h, **params) - d(Z - h, **params)) / (2 * h)


def _kink_smoothing(fn, params):
    """(left slope, right slope, kink) for activations with one kink and constant slopes elsewhere."""
    if fn == "relu":
        return 0.0, 1.0, 0.0
    if fn == "leaky_relu":
        return float(params.get("negative_slope", 0.01)), 1.0, 0.0
    return None


class _Elementwise:
    def __init__(self, act: SlopeRestricted, Z, tau):
        fn, p = act.fn, act.params
        if fn == "hardtanh":
            lo, hi = float(p.get("min_val", -1.0)), float(p.get("max_val", 1.0))
            if tau > 0:
                T = _temperature(tau, Z)
                s1, s2 = special.expit((Z - lo) / T), special.expit((hi - Z) / T)
                self.d = s1 * s2
                self.d2 = (s1 * (1 - s1) * s2 - s1 * s2 * (1 - s2)) / T
            else:
                self.d, self.d2 = ((Z > lo) & (Z < hi)).astype(float), np.zeros_like(Z)
            return
        kink = _kink_smoothing(fn, p)
        if kink is not None:
            a, b, z0 = kink
            if tau > 0:
                T = _temperature(tau, Z)
                s = special.expit((Z - z0) / T)
                self.d = a + (b - a) * s
                self.d2 = (b - a) * s * (1 - s) / T
            else:
                self.d = np.where(Z > z0, b, a)
                self.d2 = np.zeros_like(Z)
            return
        self.d = SLOPE_FUNCTIONS[fn][1](Z, **p)
        self.d2 = _phi2(fn, p, Z) if tau > 0 else np.zeros_like(Z)

    def apply(self, T):
        return self.d * T

    applyT = apply

    def grad(self, A, T):
        return A * T * self.d2


class _Pairs:
    """MaxMin: per pair (a, b) the Jacobian [[s, 1−s], [1−s, s]], s = 1[a > b] (smoothed)."""

    def __init__(self, Z, tau):
        diff = Z[:, 0::2] - Z[:, 1::2]
        if tau > 0:
            T = _temperature(tau, diff)
            self.s = special.expit(diff / T)
            self.ds = self.s * (1 - self.s) / T
        else:
            self.s = (diff >= 0).astype(float)
            self.ds = np.zeros_like(diff)

    def apply(self, T):
        t1, t2 = T[:, 0::2], T[:, 1::2]
        out = np.empty_like(T)
        out[:, 0::2] = self.s * t1 + (1 - self.s) * t2
        out[:, 1::2] = (1 - self.s) * t1 + self.s * t2
        return out

    applyT = apply

    def grad(self, A, T):
        c = (A[:, 0::2] - A[:, 1::2]) * (T[:, 0::2] - T[:, 1::2]) * self.ds
        out = np.empty_like(A)
        out[:, 0::2], out[:, 1::2] = c, -c
        return out


class _Sort:
    """GroupSort (groups > 2): the hard permutation of the current order (no gradient)."""

    def __init__(self, g, Z):
        B, m = Z.shape
        order = np.argsort(-Z.reshape(B, -1, g), axis=2, kind="stable")
        self.idx = (order + np.arange(0, m, g)[None, :, None]).reshape(B, m)
        self.inv = np.argsort(self.idx, axis=1)

    def apply(self, T):
        return np.take_along_axis(T, self.idx, axis=1)

    def applyT(self, A):
        return np.take_along_axis(A, self.inv, axis=1)

    def grad(self, A, T):
        return np.zeros_like(A)


class _Reflect:
    """Householder per group: J = I − 2(1 − s) v v^T, s = 1[v^T z > 0] (smoothed)."""

    def __init__(self, act: Householder, Z, tau):
        g = act.group_size
        self.V = act.vectors  # (G, g)
        self.g = g
        p = np.einsum("bGi,Gi->bG", Z.reshape(Z.shape[0], -1, g), self.V)
        if tau > 0:
            T = _temperature(tau, p)
            self.s = special.expit(p / T)
            self.ds = self.s * (1 - self.s) / T
        else:
            self.s = (p > 0).astype(float)
            self.ds = np.zeros_like(p)

    def apply(self, T):
        B = T.shape[0]
        Tg = T.reshape(B, -1, self.g)
        vt = np.einsum("bGi,Gi->bG", Tg, self.V)
        return (Tg - 2 * ((1 - self.s) * vt)[..., None] * self.V[None]).reshape(B, -1)

    applyT = apply

    def grad(self, A, T):
        B = T.shape[0]
        va = np.einsum("bGi,Gi->bG", A.reshape(B, -1, self.g), self.V)
        vt = np.einsum("bGi,Gi->bG", T.reshape(B, -1, self.g), self.V)
        return ((2 * va * vt * self.ds)[..., None] * self.V[None]).reshape(B, -1)


class _Jacobian:
    """Any other activation family: its own Jacobian at each point (no smoothing, no gradient
    through it), so the ascent works for every family the IR can hold."""

    def __init__(self, act: Activation, Z):
        self.J = np.stack([act.jacobian(z) for z in Z])  # (B, m, m)

    def apply(self, T):
        return np.einsum("bij,bj->bi", self.J, T)

    def applyT(self, A):
        return np.einsum("bji,bj->bi", self.J, A)

    def grad(self, A, T):
        return np.zeros_like(A)


def _linearise(act: Activation, Z, tau):
    if isinstance(act, SlopeRestricted):
        return _Elementwise(act, Z, tau)
    if isinstance(act, GroupSort):
        return _Pairs(Z, tau) if act.group_size == 2 else _Sort(act.group_size, Z)
    if isinstance(act, Householder):
        return _Reflect(act, Z, tau)
    return _Jacobian(act, Z)


# ---------------------------------------------------------------------------------------------
# the smoothed network at a batch of points
# ---------------------------------------------------------------------------------------------


class _Forward:
    """One forward pass over a batch, keeping each activation's pre-activation."""

    def __init__(self, layers, X):
        self.items = []  # ("affine", LinearOp) / ("act", layer, Z) / ("res", _Forward)
        Y = X
        for layer in layers:
            if isinstance(layer, Affine):
                self.items.append(("affine", layer.op))
            elif isinstance(layer, Residual):
                self.items.append(("res", _Forward(layer.body, Y)))
            else:
                self.items.append(("act", layer, Y))
            Y = layer.forward(Y)
        self.out = Y

    def linearise(self, tau) -> "_Linearised":
        return _Linearised(self, tau)


class _Linearised:
    """Layer linearisations of a forward pass (temperature tau; 0 = the true network)."""

    def __init__(self, fwd: _Forward, tau):
        self.ops = []  # (kind, obj) with kind in {"affine", "act", "res"}
        for item in fwd.items:
            if item[0] == "affine":
                self.ops.append(item)
            elif item[0] == "res":
                self.ops.append(("res", item[1].linearise(tau)))
            else:
                self.ops.append(("act", _linearise(item[1], item[2], tau)))
        self.out = fwd.out

    def tangent(self, T, keep=None):
        for kind, op in self.ops:
            if kind == "affine":
                T = np.asarray(op.matvec(T.T)).T  # rows: T W^T, the operator never densified
            elif kind == "act":
                if keep is not None:
                    keep.append(T)
                T = op.apply(T)
            else:
                T = T + op.tangent(T, keep)
        return T

    def adjoint(self, A, keep=None):
        for kind, op in reversed(self.ops):
            if kind == "affine":
                A = np.asarray(op.rmatvec(A.T)).T
            elif kind == "act":
                if keep is not None:
                    keep.append(A)
                A = op.applyT(A)
            else:
                A = A + op.adjoint(A, keep)
        return A

    def acts(self):
        for kind, op in self.ops:
            if kind == "act":
                yield op
            elif kind == "res":
                yield from op.acts()

    def grad_x(self, G):
        """Σ_k (∂z_k/∂x)^T G_k for per-activation gradients G (in forward order)."""
        it = iter(G)
        return self._grad_x(it)[0]

    def _grad_x(self, it):
        # collect this level's per-activation terms in forward order, then one reverse sweep
        terms = self._collect(it)
        return self._sweep(terms), terms

    def _collect(self, it):
        terms = []
        for kind, op in self.ops:
            if kind == "act":
                terms.append(next(it))
            elif kind == "res":
                terms.append(op._collect(it))
            else:
                terms.append(None)
        return terms

    def _sweep(self, terms, R=None):
        for (kind, op), g in zip(reversed(self.ops), reversed(terms)):
            if kind == "affine":
                R = None if R is None else np.asarray(op.rmatvec(R.T)).T
            elif kind == "act":
                R = g if R is None else op.applyT(R) + g
            else:
                inner = op._sweep(g, R)
                R = inner if R is None else R + inner
        return R


def _normalise(M):
    n = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(n > 0, n, 1.0)


def _objective_grad(lin: _Linearised, U, V, true: _Linearised):
    """(σ = u^T J_T v per row, ∇_x σ): J_T the smoothed Jacobian ``lin`` at the true network's
    pre-activations, whose dependence on x is the true network's (``true``, temperature 0)."""
    tangents, adjoints = [], []
    JV = lin.tangent(V, tangents)
    lin.adjoint(U, adjoints)
    adjoints.reverse()  # forward order of the activations
    acts = list(lin.acts())
    G = [op.grad(A, T) for op, A, T in zip(acts, adjoints, tangents)]
    sigma = np.einsum("bi,bi->b", U, JV)
    gx = true.grad_x(G)
    if gx is None:
        gx = np.zeros_like(V)
    return sigma, gx


def _top_pair(lin, Cs, U, V, norm, iters):
    """Warm-started top singular pair of J(x_b) (ℓ2, ``Cs`` None), or u = c_b with
    v = J^T c_b / ‖J^T c_b‖_2 (ℓ2 of a scalar output) or v = sign(J^T c_b) (ℓ∞)."""
    if Cs is not None:
        g = lin.adjoint(Cs)
        if norm == "linf":
            return Cs, np.where(g >= 0, 1.0, -1.0), np.abs(g).sum(axis=1)
        return Cs, _normalise(g), np.linalg.norm(g, axis=1)
    for _ in range(iters):
        U = _normalise(lin.tangent(V))
        V = _normalise(lin.adjoint(U))
    return U, V, np.linalg.norm(lin.tangent(V), axis=1)


def jacobian_ascent(net: Network, norm: str, selections: np.ndarray, X0: np.ndarray, steps: int = 60,
                    lr: float = 0.05, tau0: float = 0.5, tau1: float = 1e-3, power_iters: int = 3,
                    domain=None, seed: int = 0, project=None, scale=None):
    given_scale = scale
    """Gradient ascent of the (smoothed) Jacobian norm from the rows of X0.

    ``selections``: None (ℓ2 of the whole output) or (B, out), per start the scalar output c_b
    (ℓ2 or ℓ∞).  Returns ``(X, V, S)``: the points visited where the *true* network's
    Jacobian norm was largest for each start, its top input direction there and that norm
    (a Jacobian norm, not yet a quotient).  ``domain`` = (lo, hi) arrays projects onto a box;
    ``project`` (a function of the batch) onto any other set, with steps ``lr·scale``.
    """
    rng = np.random.default_rng(seed)
    X = np.array(X0, dtype=float)
    B, n = X.shape
    Cs = None if selections is None else np.asarray(selections, dtype=float)
    V = _normalise(rng.standard_normal((B, n)))
    U = None
    best_s = np.full(B, -np.inf)
    best_x, best_v = X.copy(), V.copy()
    scale = np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if domain is not None:
        lo, hi = domain
        scale = np.full((B, 1), float(np.linalg.norm(np.asarray(hi) - np.asarray(lo))))
    if given_scale is not None:
        scale = np.full((B, 1), float(given_scale))
    m = np.zeros_like(X)
    taus = np.geomspace(tau0, tau1, max(steps, 1))
    for k in range(steps + 1):
        fwd = _Forward(net.layers, X)
        true = fwd.linearise(0.0)
        Ut, Vt, st = _top_pair(true, Cs, U, V, norm, power_iters + (3 if k == 0 else 0))
        better = st > best_s
        best_s = np.where(better, st, best_s)
        best_x[better], best_v[better] = X[better], Vt[better]
        if k == steps:
            break
        lin = fwd.linearise(taus[k])
        U, V, _ = _top_pair(lin, Cs, Ut, Vt, norm, 1)
        _, g = _objective_grad(lin, U, V, true)
        # normalised-gradient step with momentum, length lr·scale (decaying)
        m = 0.7 * m + _normalise(g)
        step = lr * (1 - 0.9 * k / steps)
        X = X + step * scale * _normalise(m)
        if domain is not None:
            X = np.clip(X, lo, hi)
        if project is not None:
            X = project(X)
    return best_x, best_v, best_s
