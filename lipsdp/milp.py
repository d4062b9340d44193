"""Exact ℓ∞ and ℓ1 Lipschitz constants of small ReLU networks by mixed-integer programming.

For a ReLU network f and a scalar output c^T f, on a box domain X,

    L_p(X) = max_{x ∈ X} ‖∇(c^T f)(x)‖_q ,      (ℓ∞ input: q = 1;  ℓ1 input: q = ∞),

the maximum running over the gradients of the linear pieces that meet X (Jordan & Dimakis,
"Exactly Computing the Local Lipschitz Constant of ReLU Networks", NeurIPS 2020 — LipMIP).
The gradient of the piece with activation pattern a is

    ∇ = W_0^T D_1 W_1^T D_2 … D_l W_l^T c,       D_k = diag(a_k),  a_k ∈ {0, 1}^{n_k},

and a is the pattern of some x ∈ X.  Both conditions are mixed-integer linear: the forward pass
``h = ReLU(z)`` with one binary per neuron and big-M constants from interval bounds over X, the
gradient through the same binaries: by default in forward form, ‖∇‖_q = max over the vertices t
of the primal-norm unit ball of c^T J t, with t a sign vector (ℓ∞ input: one binary per input
coordinate) or a signed unit vector (ℓ1 input), and the products p_k = a_k ⊙ (W_{k−1} p_{k−1})
linearised exactly (McCormick with binary a) from interval (and one round of LP-tightened)
bounds, leaving a linear objective c^T W_l p_l; the backward form pulls c^T J back instead and
needs big-M binaries for the dual norm.  HiGHS (``highspy``) solves it to a relative gap of
1e-9.  Both forms grow quickly with the number of unstable neurons: a few seconds for about 20
hidden neurons, minutes and more from about 30 (benchmarks/results-local.md).

Global constants: a ReLU network without biases is positively homogeneous, so every linear
piece meets the box [−1, 1]^n and the domain value *is* the global Lipschitz constant.  With
biases the value is exact on the given domain only (still a lower bound on the global one).

Realisation: the optimal pattern is re-solved as an LP that maximises its margin
``min_i s_i z_i(x)`` inside the domain; a positive margin gives an interior point of that linear
piece, where a finite difference reproduces the gradient.  :attr:`ExactLipschitz.lower` is that
real difference quotient; :attr:`ExactLipschitz.exact` says whether it meets the MILP's proven
bound (it does unless the optimal pattern only touches X on a lower-dimensional set).
The MILP bound itself relies on HiGHS's tolerances (feasibility 1e-9); it is not a certificate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .errors import FormulationError, InvalidNetworkError
from .ir import Affine, Network, SlopeRestricted

__all__ = ["ExactLipschitz", "exact_lipschitz", "milp_supported"]

#: hidden-neuron counts up to which :func:`lipsdp.lower.lower_bound` tries the MILP when asked
#: (``exact=True``) and by default; the MILP's time grows quickly with the count (big-M bounds)
MAX_NEURONS = 100
AUTO_NEURONS = 24


@dataclass(frozen=True, eq=False)
class ExactLipschitz:
    """Result of :func:`exact_lipschitz` for the scalar output ``c^T f``.

    ``value``: the MILP's proven bound (the exact constant when ``optimal``); ``lower``: the
    real difference quotient of ``x`` and ``x + step·direction`` (a true lower bound);
    ``exact``: ``optimal`` and ``lower`` equal to ``value`` within 1e-6 relative.
    """

    value: float
    lower: float
    x: np.ndarray
    direction: np.ndarray
    step: float
    norm: str
    optimal: bool
    status: str
    global_: bool
    seconds: float

    @property
    def exact(self) -> bool:
        return self.optimal and self.lower >= self.value * (1 - 1e-6)


def milp_supported(net: Network) -> str | None:
    """None when the MILP applies to ``net`` (feedforward ReLU / leaky-free), else the reason."""
    if not net.is_feedforward:
        return "residual blocks are not supported by the MILP"
    for act in net.activations:
        if not (isinstance(act, SlopeRestricted) and act.fn == "relu"):
            return f"the MILP handles ReLU only, not {act.describe()}"
    return None


def _interval_affine(W, b, lo, hi):
    c, r = (lo + hi) / 2, (hi - lo) / 2
    mid = W @ c + (0 if b is None else b)
    rad = np.abs(W) @ r
    return mid - rad, mid + rad


class _Model:
    """Columns and rows of a MILP, kept as lists until :meth:`solve`."""

    def __init__(self):
        self.lo, self.hi, self.cost, self.integer = [], [], [], []
        self.rows, self.rlo, self.rhi = [], [], []

    def add(self, lo, hi, integer=False, cost=0.0):
        lo, hi = np.broadcast_arrays(np.asarray(lo, float), np.asarray(hi, float))
        start = len(self.lo)
        self.lo += list(lo.ravel())
        self.hi += list(hi.ravel())
        self.cost += list(np.broadcast_to(cost, lo.shape).ravel().astype(float))
        self.integer += [integer] * lo.size
        return np.arange(start, start + lo.size)

    def row(self, idx, coef, lo=-np.inf, hi=np.inf):
        self.rows.append((np.asarray(idx), np.asarray(coef, float)))
        self.rlo.append(lo)
        self.rhi.append(hi)

    def rows_dense(self, cols_list, mats, lo, hi):
        """Rows Σ_j mats[j] @ vars[cols_list[j]] in [lo, hi] (one row per matrix row)."""
        m = mats[0].shape[0]
        lo = np.broadcast_to(lo, (m,))
        hi = np.broadcast_to(hi, (m,))
        for i in range(m):
            idx = np.concatenate(list(cols_list))
            coef = np.concatenate([np.atleast_2d(M)[i] if M.ndim == 2 else np.atleast_1d(M[i]) for M in mats])
            keep = coef != 0
            self.row(idx[keep], coef[keep], lo[i], hi[i])

    def highs(self, time_limit, verbose=False):
        import highspy

        h = highspy.Highs()
        h.setOptionValue("output_flag", bool(verbose))
        h.setOptionValue("mip_rel_gap", 1e-9)
        h.setOptionValue("mip_abs_gap", 1e-12)
        h.setOptionValue("mip_feasibility_tolerance", 1e-9)
        h.setOptionValue("primal_feasibility_tolerance", 1e-9)
        h.setOptionValue("threads", 1)
        if time_limit is not None:
            h.setOptionValue("time_limit", float(time_limit))
        lp = highspy.HighsLp()
        n = len(self.lo)
        lp.num_col_ = n
        lp.num_row_ = len(self.rows)
        lp.col_cost_ = np.array(self.cost)
        lp.col_lower_ = np.array(self.lo)
        lp.col_upper_ = np.array(self.hi)
        lp.row_lower_ = np.array(self.rlo, dtype=float)
        lp.row_upper_ = np.array(self.rhi, dtype=float)
        lp.sense_ = highspy.ObjSense.kMaximize
        data = [c for _, c in self.rows]
        idx = [i for i, _ in self.rows]
        indptr = np.cumsum([0] + [len(i) for i in idx])
        A = sparse.csr_matrix((np.concatenate(data) if data else [], np.concatenate(idx) if idx else [], indptr),
                              shape=(len(self.rows), n)).tocsc()
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = A.indptr
        lp.a_matrix_.index_ = A.indices
        lp.a_matrix_.value_ = A.data
        lp.integrality_ = [highspy.HighsVarType.kInteger if t else highspy.HighsVarType.kContinuous for t in self.integer]
        h.passModel(lp)
        return h

    def solve(self, time_limit, verbose=False):
        h = self.highs(time_limit, verbose)
        h.run()
        status = h.modelStatusToString(h.getModelStatus())
        info = h.getInfo()
        sol = np.array(h.getSolution().col_value) if info.primal_solution_status == 2 else None
        bound = float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else float("inf")
        return status, sol, float(info.objective_function_value), bound


def _realise(net: Network, pattern: list[np.ndarray], lo, hi):
    """An interior point of the linear piece with ``pattern`` inside [lo, hi] (LP, maximal margin)."""
    from scipy.optimize import linprog

    n = net.input_dim
    A = np.eye(n)
    c = np.zeros(n)
    rows, offs = [], []
    k = 0
    for layer in net.layers:
        if isinstance(layer, Affine):
            A = layer.weight @ A
            c = layer.weight @ c + (0 if layer.bias is None else layer.bias)
        else:
            s = np.where(pattern[k] > 0.5, 1.0, -1.0)
            rows.append(s[:, None] * A)
            offs.append(s * c)
            A = (pattern[k] > 0.5)[:, None] * A
            c = (pattern[k] > 0.5) * c
            k += 1
    G = np.vstack(rows)
    g0 = np.concatenate(offs)
    scale = np.maximum(np.abs(G).sum(axis=1), 1e-300)
    # maximise δ subject to (G x + g0) / scale ≥ δ, lo ≤ x ≤ hi, δ ≤ 1
    A_ub = np.hstack([-G / scale[:, None], np.ones((G.shape[0], 1))])
    res = linprog(np.r_[np.zeros(n), -1.0], A_ub=A_ub, b_ub=g0 / scale,
                  bounds=list(zip(lo, hi)) + [(None, 1.0)], method="highs")
    if res.status != 0:
        return None, 0.0
    x, delta = res.x[:n], float(res.x[n])
    margins = (G @ x + g0) / scale
    return x, float(min(delta, margins.min()))


def _preactivation(m, affine, prev, zl, zu):
    """Columns z ∈ [zl, zu] with the equality rows z = W h_prev + b of one affine layer."""
    W, b = affine.weight, affine.bias
    zv = m.add(zl, zu)
    m.rows_dense([zv, prev], [-np.eye(W.shape[0]), W], -(0 if b is None else b), -(0 if b is None else b))
    return zv


def _relu_forward(m, affines, l, lo, hi, Zlo, Zhi, margin, integer):
    """The forward pass of both MILP forms: x ∈ [lo, hi], z_k = W_k h_{k−1} + b_k, the big-M ReLU
    encoding h_k = a_k ⊙ z_k with pattern binaries a_k, and the margin that keeps only points
    inside a linear piece.  Returns (x columns, pattern columns, pre-activation columns, last h)."""
    xv = m.add(lo, hi)
    prev = xv
    avars, zvars = [], []
    for k in range(l):
        zl, zu = Zlo[k], Zhi[k]
        nk = affines[k].out_dim
        zv = _preactivation(m, affines[k], prev, zl, zu)
        zvars.append(zv)
        delta = margin * np.maximum(zu - zl, 1e-300)
        av = m.add((zl >= delta).astype(float), (zu >= delta).astype(float), integer=integer)
        hv = m.add(np.zeros(nk), np.maximum(zu, 0))
        for i in range(nk):
            m.row([hv[i], zv[i]], [1.0, -1.0], 0.0)                              # h ≥ z
            m.row([hv[i], zv[i], av[i]], [1.0, -1.0, -zl[i]], -np.inf, -zl[i])  # h ≤ z − l(1 − a)
            m.row([hv[i], av[i]], [1.0, -max(zu[i], 0.0)], -np.inf, 0.0)        # h ≤ u a
            if zl[i] == zu[i] == 0.0:  # z ≡ 0 on the domain: the neuron is off, no margin needed
                continue
            # a = 1 ⇒ z ≥ δ,  a = 0 ⇒ z ≤ −δ: only points inside a linear piece count (module docstring)
            m.row([zv[i], av[i]], [1.0, -(delta[i] - zl[i])], zl[i], np.inf)
            m.row([zv[i], av[i]], [1.0, -(zu[i] + delta[i])], -np.inf, -delta[i])
        avars.append(av)
        prev = hv
    return xv, avars, zvars, prev


def _build(affines, c, norm, lo, hi, bounds, margin, relax=False):
    """The MILP (or its LP relaxation) for the given interval bounds; (model, x columns, pattern columns)."""
    Zlo, Zhi, Glo, Ghi, ylo, yhi = bounds
    n = lo.size
    l = len(affines) - 1
    g_last = affines[-1].weight.T @ c
    integer = not relax
    m = _Model()
    xv, avars, zvars, prev = _relu_forward(m, affines, l, lo, hi, Zlo, Zhi, margin, integer)
    qvars = []
    # backward: q_k = a_k ⊙ g_k, g_{k} = W_k^T q_{k+1} (k < l), g_l = W_l^T c
    qnext = None
    for k in range(l - 1, -1, -1):
        nk = affines[k].weight.shape[0]
        gl, gu = Glo[k], Ghi[k]
        qlo = np.minimum(gl, 0)
        qhi = np.maximum(gu, 0)
        qv = m.add(qlo, qhi)
        av = avars[k]
        if k == l - 1:
            for i in range(nk):  # q = g a with g constant
                m.row([qv[i], av[i]], [1.0, -g_last[i]], 0.0, 0.0)
        else:
            WT = affines[k + 1].weight.T  # g_k = W_{k+1}^T q_{k+1}
            for i in range(nk):
                gi_idx, gi_coef = qnext, WT[i]
                keep = gi_coef != 0
                gi_idx, gi_coef = gi_idx[keep], gi_coef[keep]
                m.row([qv[i], av[i]], [1.0, -gu[i]], -np.inf, 0.0)                           # q ≤ gu a
                m.row([qv[i], av[i]], [1.0, -gl[i]], 0.0, np.inf)                            # q ≥ gl a
                m.row(np.r_[qv[i], gi_idx, av[i]], np.r_[1.0, -gi_coef, -gl[i]], -np.inf, -gl[i])  # q ≤ g − gl(1 − a)
                m.row(np.r_[qv[i], gi_idx, av[i]], np.r_[1.0, -gi_coef, -gu[i]], -gu[i], np.inf)   # q ≥ g − gu(1 − a)
        qvars.append(qv)
        qnext = qv
    # input gradient y = W_0^T q_1, and its dual norm
    W0T = affines[0].weight.T
    yv = m.add(ylo, yhi)
    m.rows_dense([yv, qnext], [-np.eye(n), W0T], 0.0, 0.0)
    M = np.maximum(np.abs(ylo), np.abs(yhi))
    if norm == "linf":  # max Σ |y_j|
        tv = m.add(np.zeros(n), M, cost=1.0)
        sv = m.add(np.zeros(n), np.ones(n), integer=integer)
        for j in range(n):
            m.row([tv[j], yv[j], sv[j]], [1.0, -1.0, 2 * M[j]], -np.inf, 2 * M[j])  # t ≤ y + 2M(1 − s)
            m.row([tv[j], yv[j], sv[j]], [1.0, 1.0, -2 * M[j]], -np.inf, 0.0)       # t ≤ −y + 2M s
    else:  # max max_j |y_j|
        Mx = float(M.max())
        tv = m.add(0.0, Mx, cost=1.0)
        ep = m.add(np.zeros(n), np.ones(n), integer=integer)
        en = m.add(np.zeros(n), np.ones(n), integer=integer)
        m.row(np.r_[ep, en], np.ones(2 * n), 1.0, 1.0)
        for j in range(n):
            m.row([tv[0], yv[j], ep[j]], [1.0, -1.0, 2 * Mx], -np.inf, 2 * Mx)   # t ≤ y_j + 2M(1 − e+)
            m.row([tv[0], yv[j], en[j]], [1.0, 1.0, 2 * Mx], -np.inf, 2 * Mx)    # t ≤ −y_j + 2M(1 − e−)
    return m, xv, avars, (yv, qvars[::-1], zvars)


def _tighten(affines, c, norm, lo, hi, bounds, margin, t_end):
    """One round of LP-based bound tightening of the backward vectors g_k (and the input gradient)."""
    Zlo, Zhi, Glo, Ghi, ylo, yhi = bounds
    m, _, _, (yv, qvars, zvars) = _build(affines, c, norm, lo, hi, bounds, margin, relax=True)
    h = m.highs(None)
    l = len(affines) - 1
    Glo, Ghi = [g.copy() for g in Glo], [g.copy() for g in Ghi]
    ncol = len(m.lo)

    def extreme(coef_idx, coef, sense):
        if t_end is not None and time.perf_counter() > t_end:
            return None
        cost = np.zeros(ncol)
        cost[coef_idx] = coef * sense
        h.changeColsCost(ncol, np.arange(ncol, dtype=np.int32), cost)
        h.run()
        if h.getModelStatus() != highspy_status_optimal():
            return None
        return sense * h.getInfo().objective_function_value

    Zlo, Zhi = [z.copy() for z in Zlo], [z.copy() for z in Zhi]
    for k in range(1, l):  # pre-activations beyond the first layer
        for i in range(Zlo[k].size):
            hi_v = extreme(np.array([zvars[k][i]]), np.array([1.0]), 1.0)
            lo_v = extreme(np.array([zvars[k][i]]), np.array([1.0]), -1.0)
            if hi_v is not None:
                Zhi[k][i] = min(Zhi[k][i], hi_v + 1e-9 * (1 + abs(hi_v)))
            if lo_v is not None:
                Zlo[k][i] = max(Zlo[k][i], lo_v - 1e-9 * (1 + abs(lo_v)))
    # g_k = W_{k+1}^T q_{k+1} for k < l − 1 (g_{l−1} is exact), y = W_0^T q_0
    for k in range(l - 1):
        WT = affines[k + 1].weight.T
        for i in range(WT.shape[0]):
            keep = WT[i] != 0
            hi_v = extreme(qvars[k + 1][keep], WT[i][keep], 1.0)
            lo_v = extreme(qvars[k + 1][keep], WT[i][keep], -1.0)
            if hi_v is not None:
                Ghi[k][i] = min(Ghi[k][i], hi_v + 1e-9 * (1 + abs(hi_v)))
            if lo_v is not None:
                Glo[k][i] = max(Glo[k][i], lo_v - 1e-9 * (1 + abs(lo_v)))
    ylo, yhi = ylo.copy(), yhi.copy()
    for j in range(lo.size):
        hi_v = extreme(np.array([yv[j]]), np.array([1.0]), 1.0)
        lo_v = extreme(np.array([yv[j]]), np.array([1.0]), -1.0)
        if hi_v is not None:
            yhi[j] = min(yhi[j], hi_v + 1e-9 * (1 + abs(hi_v)))
        if lo_v is not None:
            ylo[j] = max(ylo[j], lo_v - 1e-9 * (1 + abs(lo_v)))
    return Zlo, Zhi, Glo, Ghi, ylo, yhi


def _build_fwd(affines, c, norm, lo, hi, bounds, margin, relax=False):
    """Forward-tangent form: t_0 = a vertex of the dual-norm ball (sign binaries for ℓ∞, a signed
    unit vector for ℓ1), p_k = a_k ⊙ (W_{k−1} p_{k−1}), objective c^T W_l p_l (linear)."""
    Zlo, Zhi, Tlo, Thi = bounds
    n = lo.size
    l = len(affines) - 1
    integer = not relax
    m = _Model()
    xv, avars, zvars, prev = _relu_forward(m, affines, l, lo, hi, Zlo, Zhi, margin, integer)
    # the input tangent t_0
    if norm == "linf":  # t_0 = 2 s − 1
        sv = m.add(np.zeros(n), np.ones(n), integer=integer)
        t0 = m.add(-np.ones(n), np.ones(n))
        for j in range(n):
            m.row([t0[j], sv[j]], [1.0, -2.0], -1.0, -1.0)
    else:  # t_0 = e+ − e−, one nonzero
        ep = m.add(np.zeros(n), np.ones(n), integer=integer)
        en = m.add(np.zeros(n), np.ones(n), integer=integer)
        m.row(np.r_[ep, en], np.ones(2 * n), 1.0, 1.0)
        t0 = m.add(-np.ones(n), np.ones(n))
        for j in range(n):
            m.row([t0[j], ep[j], en[j]], [1.0, -1.0, 1.0], 0.0, 0.0)
    prev = t0
    tvars = []
    for k in range(l):
        W = affines[k].weight
        nk = W.shape[0]
        tl, tu = Tlo[k], Thi[k]
        tv = m.add(tl, tu)  # τ_k = W p_{k−1}
        tvars.append(tv)
        m.rows_dense([tv, prev], [-np.eye(nk), W], 0.0, 0.0)
        pv = m.add(np.minimum(tl, 0), np.maximum(tu, 0))
        av = avars[k]
        for i in range(nk):  # p = a τ (McCormick, exact for binary a)
            m.row([pv[i], av[i]], [1.0, -tu[i]], -np.inf, 0.0)
            m.row([pv[i], av[i]], [1.0, -tl[i]], 0.0, np.inf)
            m.row([pv[i], tv[i], av[i]], [1.0, -1.0, -tl[i]], -np.inf, -tl[i])
            m.row([pv[i], tv[i], av[i]], [1.0, -1.0, -tu[i]], -tu[i], np.inf)
        prev = pv
    w = affines[-1].weight.T @ c
    for i, j in enumerate(prev):
        m.cost[j] = float(w[i])
    return m, xv, avars, (zvars, tvars)


def _tighten_fwd(affines, c, norm, lo, hi, bounds, margin, t_end):
    """One round of LP-based bound tightening of the pre-activations (k ≥ 2) and tangents τ_k."""
    Zlo, Zhi, Tlo, Thi = (list(map(np.copy, b)) for b in bounds)
    m, _, _, (zvars, tvars) = _build_fwd(affines, c, norm, lo, hi, bounds, margin, relax=True)
    h = m.highs(None)
    ncol = len(m.lo)
    idx_all = np.arange(ncol, dtype=np.int32)

    def extreme(col, sense):
        if t_end is not None and time.perf_counter() > t_end:
            return None
        cost = np.zeros(ncol)
        cost[col] = sense
        h.changeColsCost(ncol, idx_all, cost)
        h.run()
        if h.getModelStatus() != highspy_status_optimal():
            return None
        return sense * h.getInfo().objective_function_value

    for groups, L, U in ((zvars[1:], Zlo[1:], Zhi[1:]), (tvars[1:], Tlo[1:], Thi[1:])):
        for cols, lo_k, hi_k in zip(groups, L, U):
            for i, col in enumerate(cols):
                up, dn = extreme(col, 1.0), extreme(col, -1.0)
                if up is not None:
                    hi_k[i] = min(hi_k[i], up + 1e-9 * (1 + abs(up)))
                if dn is not None:
                    lo_k[i] = max(lo_k[i], dn - 1e-9 * (1 + abs(dn)))
                if lo_k[i] > hi_k[i]:
                    lo_k[i] = hi_k[i] = 0.5 * (lo_k[i] + hi_k[i])
    return Zlo, Zhi, Tlo, Thi


def highspy_status_optimal():
    import highspy

    return highspy.HighsModelStatus.kOptimal


def exact_lipschitz(network, norm: str = "linf", output=None, domain=None, time_limit: float | None = 60.0,
                    margin: float = 1e-7, tighten: int = 1, formulation: str = "forward",
                    verbose: bool = False) -> ExactLipschitz:
    """The ℓ∞ (``norm="linf"``) or ℓ1 (``norm="l1"``) Lipschitz constant of ``c^T f`` by MILP.

    ``output``: logit index or vector c (required when the network has several outputs).
    ``domain``: (lo, hi) box; default [−1, 1]^n, which gives the *global* constant for a
    network without biases (module docstring).  ``time_limit`` in seconds (None: no limit); a
    stopped solve returns ``optimal=False`` with HiGHS's proven bound as ``value``.
    ``margin``: each neuron's pre-activation must clear zero by ``margin`` × its interval width
    over the domain, so the optimum is attained inside a linear piece (module docstring).
    ``tighten``: rounds of LP bound tightening before the MILP.  ``formulation``: ``"forward"``
    (the tangent of a dual-norm-ball vertex pushed through the layers; linear objective) or
    ``"backward"`` (the gradient c^T J pulled back, then its dual norm with big-M binaries).
    """
    t0 = time.perf_counter()
    from .api import as_network

    net = as_network(network)
    why = milp_supported(net)
    if why:
        raise InvalidNetworkError(f"exact_lipschitz: {why}")
    if norm not in ("linf", "l1"):
        raise FormulationError(f"exact_lipschitz: norm must be 'linf' or 'l1', got {norm!r}")
    K = net.output_dim
    if output is None:
        if K != 1:
            raise FormulationError(f"exact_lipschitz: the network has {K} outputs; pass output= (a logit index or a vector c)")
        c = np.ones(1)
    elif isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        if not -K <= output < K:
            raise FormulationError(f"output={output}: the network has {K} outputs")
        c = np.eye(K)[int(output)]
    else:
        c = np.asarray(output, dtype=float).ravel()
        if c.shape != (K,):
            raise FormulationError(f"output: expected a vector c of length {K}, got shape {c.shape}")
    n = net.input_dim
    has_bias = any(a.bias is not None and np.any(a.bias != 0) for a in net.affines)
    if domain is None:
        lo, hi = -np.ones(n), np.ones(n)
    else:
        lo, hi = (np.broadcast_to(np.asarray(v, float).ravel(), (n,)).copy() for v in domain)
        if np.any(lo > hi):
            raise FormulationError("exact_lipschitz: domain needs lo <= hi")
    affines = net.affines
    l = len(affines) - 1
    if l == 0:  # affine map: the gradient is constant
        g = affines[0].weight.T @ c
        val = float(np.abs(g).sum() if norm == "linf" else np.abs(g).max())
        j = int(np.argmax(np.abs(g)))
        d = np.where(g >= 0, 1.0, -1.0) if norm == "linf" else np.sign(g[j]) * np.eye(n)[j]
        return ExactLipschitz(val, val, np.zeros(n), d, 1.0, norm, True, "Optimal", domain is None,
                              time.perf_counter() - t0)

    # interval bounds of the pre-activations over the domain
    Zlo, Zhi = [], []
    hlo, hhi = lo, hi
    for A in affines[:-1]:
        zl, zu = _interval_affine(A.weight, A.bias, hlo, hhi)
        Zlo.append(zl)
        Zhi.append(zu)
        hlo, hhi = np.maximum(zl, 0), np.maximum(zu, 0)
    # interval bounds of the backward vectors g_k (∂(c^T f)/∂h_k) and q_k = a_k ⊙ g_k
    g_last = affines[-1].weight.T @ c
    Glo, Ghi = [None] * l, [None] * l
    gl, gu = g_last.copy(), g_last.copy()
    for k in range(l - 1, -1, -1):
        Glo[k], Ghi[k] = gl, gu
        act_on, act_off = Zlo[k] >= 0, Zhi[k] <= 0
        ql = np.where(act_off, 0.0, np.where(act_on, gl, np.minimum(gl, 0)))
        qu = np.where(act_off, 0.0, np.where(act_on, gu, np.maximum(gu, 0)))
        gl, gu = _interval_affine(affines[k].weight.T, None, ql, qu)
    ylo, yhi = gl, gu  # bounds of the input gradient

    t_end = None if time_limit is None else time.perf_counter() + time_limit
    if formulation == "backward":
        bounds = (Zlo, Zhi, Glo, Ghi, ylo, yhi)
        for _ in range(tighten):
            bounds = _tighten(affines, c, norm, lo, hi, bounds, margin, t_end)
        m, xv, avars, _ = _build(affines, c, norm, lo, hi, bounds, margin)
    else:
        # interval bounds of the forward tangents τ_k = W_{k−1} p_{k−1}, p_k = a_k ⊙ τ_k
        Tlo, Thi = [], []
        tl, tu = (-np.ones(n), np.ones(n))
        for k in range(l):
            W = affines[k].weight
            if k == 0 and norm == "l1":
                r = np.abs(W).max(axis=1)
                al, au = -r, r
            else:
                al, au = _interval_affine(W, None, tl, tu)
            Tlo.append(al)
            Thi.append(au)
            on, off = Zlo[k] >= 0, Zhi[k] <= 0
            tl = np.where(off, 0.0, np.where(on, al, np.minimum(al, 0)))
            tu = np.where(off, 0.0, np.where(on, au, np.maximum(au, 0)))
        bounds = (Zlo, Zhi, Tlo, Thi)
        for _ in range(tighten):
            bounds = _tighten_fwd(affines, c, norm, lo, hi, bounds, margin, t_end)
        m, xv, avars, _ = _build_fwd(affines, c, norm, lo, hi, bounds, margin)
    left = None if t_end is None else max(t_end - time.perf_counter(), 0.1)
    status, sol, obj, bound = m.solve(left, verbose)
    optimal = status == "Optimal"
    value = obj if optimal else bound
    x_best, direction, step, q = np.zeros(n), np.zeros(n), 0.0, 0.0
    if sol is not None:
        pattern = [sol[av] for av in avars]
        x, margin = _realise(net, pattern, lo, hi)
        if x is None or margin <= 0:
            x = sol[xv]
        J = (c @ net.jacobian(x))
        if norm == "linf":
            direction = np.where(J >= 0, 1.0, -1.0)
        else:
            j = int(np.argmax(np.abs(J)))
            direction = np.zeros(n)
            direction[j] = 1.0 if J[j] >= 0 else -1.0
        # a step that changes no neuron's sign (margin is per unit ℓ1 row norm, |Δz_i| ≤ h ‖row‖_1)
        candidates = [0.5 * margin] if margin > 0 else []
        candidates += [1e-3 * max(1.0, np.max(np.abs(x))) * f for f in (1.0, 1e-2, 1e-4)]
        for h in candidates:
            x2 = x + h * direction
            dy = float(c @ (net.forward(x2) - net.forward(x)))
            dn = np.max(np.abs(x2 - x)) if norm == "linf" else np.abs(x2 - x).sum()
            quot = abs(dy) / dn if dn > 0 else 0.0
            if quot > q:
                q, x_best, step = quot, x, h
    return ExactLipschitz(float(value), float(q), np.asarray(x_best), np.asarray(direction), float(step), norm,
                          optimal, status, not has_bias and domain is None, time.perf_counter() - t0)
