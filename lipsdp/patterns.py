"""Activation-pattern search: ℓ2 lower bounds for feedforward (leaky-)ReLU networks.

A feedforward network f = W_l φ(… φ(W_0 x + b_0) …) + b_l with φ = ReLU or leaky ReLU is
piecewise affine.  On the region where the activation pattern is a = (a_1, …, a_l) — neuron
i of layer k active iff its pre-activation z_{k,i}(x) > 0 — it is affine with Jacobian

    J_a = W_l D_l W_{l−1} … D_1 W_0,        D_k = diag(a_k + α (1 − a_k))   (α: leaky slope),

and every pre-activation is an affine function z_k(x) = F_k x + c_k of x there.  The region is
the polyhedron {x : s_k ⊙ (F_k x + c_k) ≥ 0 for all k}, s_k = 2 a_k − 1.  The Lipschitz constant
is the largest ‖C J_a‖_2 over the patterns whose region has an interior point (Jordan &
Dimakis 2020, LipMIP; math.md §1 for the notation), and at such a point x

    ‖C (f(x + h v) − f(x))‖_2 / h = ‖C J_a v‖_2 = ‖C J_a‖_2

for the top right singular vector v and any step h that keeps x + h v in the region — an
exact local Jacobian norm realised as a true difference quotient.

The search is an iterated hill climb over patterns (``pattern_search``):

1. start from the pattern of a given point (e.g. the best point of the Jacobian ascent);
2. for every neuron, ‖C J‖ with that neuron flipped is a rank-one update of J
   (J' = J + δ B_k[:, i] F_k[i, :], δ = ±(1 − α)), so all flips are scored at once from the
   m × m Gram matrices (m = rows of C);
3. moves, each accepted only when an LP finds the new pattern's region with a positive margin,
   max t s.t. s ⊙ (F y + c) ≥ t ‖F_row‖, |y| ≤ R, in the coordinates y = Q^T x of the row
   space of W_0 (f depends on x only through W_0 x); HiGHS, warm-started from the current
   pattern's basis when highspy is installed, else scipy's HiGHS:
   a. a ray move: the true patterns of points on rays from the current interior point towards
      and across the hyperplanes of the most promising flips (several neurons at once);
   b. single flips that raise ‖C J‖, nearest hyperplane per unit gain first (flips found
      infeasible are set aside for a few moves, then re-checked before the climb stops);
   c. at a local optimum of single flips, two-neuron moves: an infeasible flip together with
      a neuron whose row carries a large dual in its LP (one that blocks it; highspy only);
4. kicks (iterated local search): from the best pattern, jump along a ray towards the
   hyperplane of a promising flip until about ``kicks`` neurons changed, climb again, keep
   the best;
5. the value is that of a realised pattern only: the returned point is the LP's interior
   point, checked by a forward pass to have that pattern, and the returned step keeps the
   pattern (also checked).  :func:`lipsdp.lower.lower_bound` turns it into the reported
   difference quotient.

Without biases f is positively homogeneous: every region is a cone at the origin, the box
|y| ≤ 1 loses nothing and the climb explores all of them; with biases it searches the box
|y| ≤ R with R from the start points.  The result is a lower bound only (a local optimum of
the pattern climb), never an upper bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from .errors import FormulationError
from .ir import Affine, Network, SlopeRestricted

__all__ = ["PatternResult", "pattern_search", "pattern_supported"]

_TABU_MOVES = 8        # moves a flip found infeasible is skipped before it is re-checked
_PAIR_SOURCES = 30   # infeasible single flips whose LP duals propose two-neuron moves
_MARGIN_TOL = 1e-9     # an LP margin above this (relative to R) counts as an interior point


@dataclass(frozen=True, eq=False)
class PatternResult:
    """The best realised pattern of :func:`pattern_search`.

    ``value`` = ‖C J_a‖_2 on the region of ``x`` (an interior point, margin ``margin`` in the
    normalised pre-activations), ``direction`` its top right singular vector (unit ℓ2) and
    ``step`` a step along it that stays in the region (checked by forward passes).
    ``quotient`` is the real difference quotient of ``x`` and ``x + step·direction``.
    """

    value: float
    quotient: float
    x: np.ndarray
    direction: np.ndarray
    step: float
    margin: float
    pattern: tuple
    start_value: float
    moves: int
    kicks: int
    lps: int
    seconds: float


def pattern_supported(net: Network) -> str | None:
    """None if :func:`pattern_search` handles ``net``, else the reason (one line)."""
    if not net.is_feedforward:
        return "the pattern search needs a feedforward network (no residual blocks)"
    for layer in net.activations:
        if not (isinstance(layer, SlopeRestricted) and layer.fn in ("relu", "leaky_relu")):
            return f"the pattern search needs ReLU or leaky-ReLU activations, got {layer.describe()}"
        if _leak(layer) >= 1.0:
            return "the pattern search needs a leaky-ReLU slope below 1"
    return None


def _leak(act: SlopeRestricted) -> float:
    return float(act.params.get("negative_slope", 0.01)) if act.fn == "leaky_relu" else 0.0


class _Problem:
    """The network in row-space coordinates y = Q^T x: pre-activations z_0 = W_0 Q y + b_0."""

    def __init__(self, net: Network, C: np.ndarray, radius: float):
        aff = net.affines
        W0 = aff[0].weight
        U, S, Vt = np.linalg.svd(W0, full_matrices=False)
        r = int(np.sum(S > S[0] * 1e-12)) if S.size else 0
        self.Q = Vt[:r].T                                    # (n, r), orthonormal columns
        self.W = [W0 @ self.Q] + [a.weight for a in aff[1:]]
        self.b = [np.zeros(a.out_dim) if a.bias is None else a.bias for a in aff]
        self.leak = [_leak(a) for a in net.activations]
        self.C = C
        self.R = radius
        self.net = net
        self._lp = _WarmLP.create()

    def pattern(self, Y):
        """Activation patterns (list of bool arrays, rows = points) of points y."""
        h, out = np.atleast_2d(Y), []
        for k, a in enumerate(self.leak):
            z = h @ self.W[k].T + self.b[k]
            out.append(z > 0)
            h = np.where(z > 0, z, a * z)
        return out

    def slopes(self, P):
        return [np.where(p, 1.0, a) for p, a in zip(P, self.leak)]

    def forward_maps(self, P):
        """(F_k, c_k) with z_k = F_k y + c_k on the region of P, and C J (m × r)."""
        F, c = [], []
        A, off = self.W[0], self.b[0]
        for k, d in enumerate(self.slopes(P)):
            F.append(A)
            c.append(off)
            A = self.W[k + 1] @ (d[:, None] * A)
            off = self.W[k + 1] @ (d * off) + self.b[k + 1]
        return F, c, self.C @ A

    def backward_maps(self, P):
        """B_k = C W_l D_l … W_{k+1}: output selection as a function of layer k's activation output."""
        slopes = self.slopes(P)
        B = [None] * len(slopes)
        M = self.C @ self.W[-1]
        for k in range(len(slopes) - 1, -1, -1):
            B[k] = M
            M = (M * slopes[k][None, :]) @ self.W[k]
        return B

    def constraints(self, P):
        """Normalised rows (G, g): the region of P is {y : G y + g ≥ 0}; rows of neurons whose
        pre-activation is constant on the region are dropped (their state does not move J)."""
        F, c, _ = self.forward_maps(P)
        s = np.concatenate([np.where(p, 1.0, -1.0) for p in P])
        G = s[:, None] * np.vstack(F)
        g = s * np.concatenate(c)
        norms = np.linalg.norm(G, axis=1)
        keep = norms > 1e-12 * max(float(norms.max(initial=0.0)), 1e-300)
        self.rows = np.flatnonzero(keep)  # neuron (flattened) of each kept row
        return G[keep] / norms[keep, None], g[keep] / norms[keep]

    def value(self, P):
        return float(np.linalg.norm(self.forward_maps(P)[2], 2))

    def blocking(self, top=10):
        """Neurons (flattened) whose rows carry the largest duals in the last LP: flipping one of
        them as well may make an infeasible flip feasible."""
        duals = self._lp.duals() if self._lp is not None else None
        if duals is None or len(duals) != len(self.rows):
            return []
        order = np.argsort(-np.abs(duals))[:top]
        return [int(self.rows[i]) for i in order if abs(duals[i]) > 1e-12]

    def realise(self, P):
        """(y, margin): the LP's interior point of the region of P inside |y| ≤ R, or (None, 0)."""
        G, g = self.constraints(P)
        r = G.shape[1]
        # maximise t  s.t.  G y + g ≥ t,  −R ≤ y ≤ R,  t ≤ R
        y = self._lp.solve(G, g, self.R) if self._lp is not None else None
        if y is None:
            A_ub = np.hstack([-G, np.ones((G.shape[0], 1))])
            res = linprog(np.r_[np.zeros(r), -1.0], A_ub=A_ub, b_ub=g,
                          bounds=[(-self.R, self.R)] * r + [(None, self.R)],
                          method="highs-ds", options={"presolve": False})
            if res.status != 0 or res.x is None:
                return None, 0.0
            y = res.x[:r]
        return y, float(np.min(G @ y + g, initial=self.R))

    def accept(self):
        """The last LP's pattern was taken: warm-start the next LPs from its basis."""
        if self._lp is not None:
            self._lp.keep()

    def norms_at(self, Y):
        """‖C J‖_2 of the true network at the points y (rows), and their patterns."""
        Y = np.atleast_2d(Y)
        pats = self.pattern(Y)
        M = np.broadcast_to(self.C @ self.W[-1], (len(Y),) + (self.C.shape[0], self.W[-1].shape[1]))
        for k in range(len(pats) - 1, -1, -1):
            d = np.where(pats[k], 1.0, self.leak[k])
            M = np.matmul(M * d[:, None, :], self.W[k])
        K = np.matmul(M, M.transpose(0, 2, 1)) if M.shape[1] <= M.shape[2] else np.matmul(M.transpose(0, 2, 1), M)
        return np.sqrt(np.maximum(np.linalg.eigvalsh(K)[:, -1], 0.0)), pats

    def flip_values(self, P):
        """‖C J‖_2 with each neuron flipped (flattened in layer order) and ‖C J‖_2 itself."""
        F, _, J = self.forward_maps(P)
        B = self.backward_maps(P)
        m, r = J.shape
        small = m <= r  # Gram matrix of the smaller side
        K = J @ J.T if small else J.T @ J
        vals = []
        for k, p in enumerate(P):
            a_, b_ = B[k].T, F[k]                              # (n_k, m), (n_k, r)
            delta = np.where(p, self.leak[k] - 1.0, 1.0 - self.leak[k])
            if small:
                u, w, nrm = a_, b_ @ J.T, np.sum(b_ * b_, axis=1)  # J' J'^T = K + δ(u w^T + w u^T) + δ²|b|² u u^T
            else:
                u, w, nrm = b_, a_ @ J, np.sum(a_ * a_, axis=1)
            M = (K[None] + delta[:, None, None] * (u[:, :, None] * w[:, None, :] + w[:, :, None] * u[:, None, :])
                 + (delta**2 * nrm)[:, None, None] * u[:, :, None] * u[:, None, :])
            vals.append(np.sqrt(np.maximum(np.linalg.eigvalsh(M)[:, -1], 0.0)))
        return np.concatenate(vals), float(np.linalg.norm(J, 2))


class _WarmLP:
    """The margin LP through highspy, warm-started from the basis of the current pattern's LP
    (the flipped patterns' LPs differ in a few rows); None without highspy (scipy is used)."""

    @classmethod
    def create(cls):
        try:
            import highspy
        except ImportError:
            return None
        return cls(highspy)

    def __init__(self, highspy):
        self.hs = highspy
        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("presolve", "off")
        self.basis = self.last = None

    def solve(self, G, g, R):
        hs, h = self.hs, self.h
        nc, r = G.shape
        lp = hs.HighsLp()
        lp.num_col_, lp.num_row_ = r + 1, nc
        lp.col_cost_ = np.r_[np.zeros(r), -1.0]
        lp.col_lower_ = np.r_[np.full(r, -R), -np.inf]
        lp.col_upper_ = np.r_[np.full(r, R), R]
        lp.row_lower_, lp.row_upper_ = -g, np.full(nc, np.inf)
        lp.a_matrix_.format_ = hs.MatrixFormat.kColwise
        lp.a_matrix_.start_ = (np.arange(r + 2) * nc).astype(np.int32)
        lp.a_matrix_.index_ = np.tile(np.arange(nc, dtype=np.int32), r + 1)
        lp.a_matrix_.value_ = np.hstack([G, -np.ones((nc, 1))]).T.ravel()
        h.clearModel()
        h.passModel(lp)
        if self.basis is not None and len(self.basis.row_status) == nc and len(self.basis.col_status) == r + 1:
            h.setBasis(self.basis)
        h.run()
        if h.getModelStatus() != hs.HighsModelStatus.kOptimal:
            return None
        self.last = h.getBasis()
        sol = h.getSolution()
        self.row_duals = np.array(sol.row_dual)
        return np.array(sol.col_value)[:r]

    def duals(self):
        return getattr(self, "row_duals", None)

    def keep(self):
        self.basis = self.last


def _same(P, Q):
    return all(np.array_equal(a, b) for a, b in zip(P, Q))


def _flip(P, offsets, j):
    k = int(np.searchsorted(offsets, j, side="right") - 1)
    Q = [p.copy() for p in P]
    Q[k][j - offsets[k]] = ~Q[k][j - offsets[k]]
    return Q


def _line_move(prob, P, y, vals, value, rng, n_dirs=32, n_random=16):
    """A multi-neuron move: points on rays from the interior point y towards (and across) the
    hyperplanes of the most promising flips, and along random directions; the true pattern of
    the best point if it beats ``value``, else None."""
    G, g = prob.constraints(P)
    dist = G @ y + g
    order = np.argsort(-vals[prob.rows])[:n_dirs]  # kept rows of the most promising flips
    D = [-G[order]]
    T = [dist[order]]
    R = rng.standard_normal((n_random, G.shape[1]))
    D.append(R / np.linalg.norm(R, axis=1, keepdims=True))
    T.append(np.full(n_random, max(float(np.median(dist)), 1e-12)))
    D, T = np.vstack(D), np.concatenate(T)
    factors = np.array([1.001, 1.01, 1.1, 1.3, 1.6, 2.0, 3.0, 5.0])
    Y = (y[None, None, :] + (T[:, None] * factors[None, :])[:, :, None] * D[:, None, :]).reshape(-1, len(y))
    Y = np.clip(Y, -prob.R, prob.R)
    s, pats = prob.norms_at(Y)
    i = int(np.argmax(s))
    if s[i] <= value * (1 + 1e-9):
        return None
    return [p[i] for p in pats]


def _kick(prob, P, y, rng, flips):
    """A random realisable pattern about ``flips`` neurons away from P: the first point along a
    ray from y whose true pattern differs from P in at least that many neurons; the ray points
    at the hyperplane of one of the 20 most promising flips, chosen at random (such directed
    kicks did better than random rays in benchmarks/results-local.md)."""
    vals, _ = prob.flip_values(P)
    G, _ = prob.constraints(P)
    d = -G[rng.choice(np.argsort(-vals[prob.rows])[:20])]
    ts = np.geomspace(1e-4, 2.0, 60) * prob.R
    Y = np.clip(y[None] + ts[:, None] * d[None], -prob.R, prob.R)
    pats = prob.pattern(Y)
    diff = sum((p != q[None]).sum(axis=1) for p, q in zip(pats, P))
    i = int(np.argmax(diff >= flips)) if np.any(diff >= flips) else len(ts) - 1
    return [p[i] for p in pats]


def _flip_order(prob, P, y, vals, value):
    """The improving flips in the order their LPs are tried: largest gain per unit distance of
    y to the neuron's hyperplane first (near hyperplanes are more often facets of the region)."""
    improving = np.flatnonzero(vals > value * (1 + 1e-9))
    G, g = prob.constraints(P)
    dist = np.full(len(vals), np.inf)
    dist[prob.rows] = np.maximum(G @ y + g, 1e-300)
    return improving[np.argsort(-(vals[improving] - value) / dist[improving])]


def _pair_move(prob, P, offsets, blocked, value, deadline, max_lps=80):
    """Two-neuron moves at a local optimum of single flips: an infeasible flip j together with
    one of the neurons that blocked its LP (largest duals), best value first, each checked by
    an LP.  Returns ((moved, lps), (P, y, margin) or None)."""
    pairs, seen = [], set()
    for j, blk in blocked.items():
        Qj = _flip(P, offsets, j)
        for b in blk:
            key = (min(j, b), max(j, b))
            if b == j or key in seen:
                continue
            seen.add(key)
            Q = _flip(Qj, offsets, b)
            v = prob.value(Q)
            if v > value * (1 + 1e-9):
                pairs.append((v, Q))
    pairs.sort(key=lambda t: -t[0])
    lps = 0
    for _, Q in pairs[:max_lps]:
        if time.perf_counter() >= deadline:
            break
        yq, mq = prob.realise(Q)
        lps += 1
        if yq is not None and mq > _MARGIN_TOL * prob.R:
            return (True, lps), (Q, yq, mq)
    return (False, lps), None


def _climb(prob: _Problem, P, deadline, max_moves, rng):
    """Hill climb from pattern P (realisable). Returns (pattern, y, margin, value, moves, lps).

    Each move: first the cheap multi-neuron ray move (:func:`_line_move`), then the improving
    single flips (:func:`_flip_order`), each checked by an LP, and when none is feasible the
    two-neuron moves proposed by the LP duals (:func:`_pair_move`)."""
    offsets = np.cumsum([0] + [len(p) for p in P])
    y, margin = prob.realise(P)
    prob.accept()
    lps, moves = 1, 0
    if y is None or margin <= _MARGIN_TOL * prob.R:  # the start lies on a boundary of its region
        return P, None, 0.0, prob.value(P), 0, lps
    tabu: dict[int, int] = {}
    while moves < max_moves and time.perf_counter() < deadline:
        vals, value = prob.flip_values(P)
        Q = _line_move(prob, P, y, vals, value, rng)
        if Q is not None:
            yq, mq = prob.realise(Q)
            lps += 1
            if yq is not None and mq > _MARGIN_TOL * prob.R:
                P, y, margin = Q, yq, mq
                prob.accept()
                moves += 1
                continue
        order = _flip_order(prob, P, y, vals, value)
        moved, skipped = False, False
        blocked: dict[int, list] = {}
        for j in order:
            if moves - tabu.get(int(j), -_TABU_MOVES - 1) <= _TABU_MOVES:
                skipped = True
                continue
            if time.perf_counter() >= deadline:
                break
            Q = _flip(P, offsets, int(j))
            yq, mq = prob.realise(Q)
            lps += 1
            if yq is not None and mq > _MARGIN_TOL * prob.R:
                P, y, margin, moved = Q, yq, mq, True
                prob.accept()
                moves += 1
                break
            tabu[int(j)] = moves
            if len(blocked) < _PAIR_SOURCES:
                blocked[int(j)] = prob.blocking()
        if not moved and not skipped and blocked:
            (moved, n), found = _pair_move(prob, P, offsets, blocked, value, deadline)
            lps += n
            if moved:
                P, y, margin = found
                prob.accept()
                moves += 1
                continue
        if not moved:
            if skipped and time.perf_counter() < deadline:
                tabu.clear()
                continue
            break
    _, value = prob.flip_values(P)
    return P, y, margin, value, moves, lps


def pattern_search(net: Network, X0, output=None, time_budget: float = 10.0, max_moves: int = 10_000,
                   radius: float | None = None, kicks: int = 15, seed: int = 0,
                   max_kicks: int | None = None) -> PatternResult:
    """Hill-climb over realisable activation patterns for a large ‖C J_a‖_2 (module docstring).

    ``X0``: start points (rows), each climbed to a local optimum (all together within half the
    budget when there are several), then the best one is kicked (below); ``output``: None (ℓ2
    of the whole output), a logit index, a vector c or a matrix C; ``time_budget``: seconds in all;
    ``radius``: half-width R of the search box in row-space coordinates (default 1 without
    biases, else twice the largest start coordinate); ``kicks``: after the climbs stop, restart
    from random patterns about that many neurons away from the best one (0: no restarts)
    while the budget lasts (at most ``max_kicks`` restarts when given: a reproducible run).  Returns the best realised pattern as a
    :class:`PatternResult` whose ``quotient`` is a real difference quotient.
    """
    reason = pattern_supported(net)
    if reason is not None:
        raise FormulationError(reason)
    X0 = np.atleast_2d(np.asarray(X0, dtype=float))
    if X0.shape[1] != net.input_dim:
        raise FormulationError(
            f"pattern_search: start points have {X0.shape[1]} coordinates, the network takes {net.input_dim}")
    if output is None:
        C = np.eye(net.output_dim)
    elif isinstance(output, (int, np.integer)):
        C = np.eye(net.output_dim)[[int(output)]]
    else:  # a vector c, or a matrix C (rows: output combinations)
        C = np.atleast_2d(np.asarray(output, dtype=float))
        if C.shape[1] != net.output_dim:
            raise FormulationError(
                f"pattern_search: output has {C.shape[1]} columns, the network has {net.output_dim} outputs")
    has_bias = any(a.bias is not None and np.any(a.bias) for a in net.affines)
    t0 = time.perf_counter()
    prob = _Problem(net, C, 1.0)
    Y0 = X0 @ prob.Q
    if radius is None:
        radius = 1.0 if not has_bias else 2.0 * max(1.0, float(np.max(np.abs(Y0))))
    prob.R = float(radius)
    if not has_bias:  # homogeneous: the pattern of a point is that of any positive multiple
        Y0 = Y0 / np.maximum(np.max(np.abs(Y0), axis=1, keepdims=True), 1e-300) * 0.5
    best = None
    n_starts = len(Y0)
    total_moves = total_lps = n_kicks = 0
    rng = np.random.default_rng(seed)
    start_value = None
    # climbs from every start (half the budget when there are several), then kicks from the best
    screen_end = t0 + time_budget * (0.5 if n_starts > 1 else 1.0)
    for i, y0 in enumerate(Y0):
        now = time.perf_counter()
        if now >= screen_end and best is not None:
            break
        P0 = [p[0] for p in prob.pattern(y0)]
        start_value = max(start_value or 0.0, prob.value(P0))
        P, y, margin, value, moves, lps = _climb(prob, P0, now + max(screen_end - now, 0.0) / (n_starts - i),
                                                 max_moves, rng=rng)
        total_moves += moves
        total_lps += lps
        if y is not None and (best is None or value > best[3]):
            best = (P, y, margin, value)
    end = t0 + time_budget
    while best is not None and time.perf_counter() < end and kicks and (max_kicks is None or n_kicks < max_kicks):
        Pk = _kick(prob, best[0], best[1], rng, kicks)
        P, y, margin, value, moves, lps = _climb(prob, Pk, end, max_moves, rng=rng)
        total_moves += moves
        total_lps += lps
        n_kicks += 1
        if y is not None and value > best[3]:
            best = (P, y, margin, value)
    if best is None:
        raise FormulationError("pattern_search: no start point lies in the interior of a linear region; "
                               "pass other start points")
    P, y, margin, value = best
    _, _, J = prob.forward_maps(P)
    v = np.linalg.svd(J)[2][0]
    x, direction = prob.Q @ y, prob.Q @ v
    direction = direction / np.linalg.norm(direction)
    step, quotient = _checked_step(net, prob, P, x, direction, margin, C)
    return PatternResult(float(value), quotient, x, direction, step, float(margin), tuple(P),
                         float(start_value if start_value is not None else value), total_moves, n_kicks, total_lps,
                         time.perf_counter() - t0)


def _patterns_of(net: Network, X):
    """Activation patterns of the true network (its own forward pass) at the rows of X."""
    out, h = [], np.atleast_2d(X)
    for layer in net.layers:
        if isinstance(layer, Affine):
            h = layer.forward(h)
        else:
            out.append(h > 0)
            h = layer.forward(h)
    return out


def _checked_step(net, prob, P, x, v, margin, C):
    """A step h along v that keeps x and x + h v in the region of P (checked on the true
    network), and the quotient ‖C (f(x + h v) − f(x))‖ / h; (0, 0) if none is found."""
    h = 0.5 * margin
    for _ in range(30):
        X = np.vstack([x, x + h * v])
        pats = _patterns_of(net, X)
        if _same([p[0] for p in pats], P) and _same([p[1] for p in pats], P):
            Y = net.forward(X)
            return float(h), float(np.linalg.norm(C @ (Y[1] - Y[0])) / h)
        h *= 0.25
    return 0.0, 0.0
