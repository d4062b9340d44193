"""lipsdp's own interior-point solver for low-rank LMI problems (math.md §10).

Solves the solver-neutral :class:`~lipsdp.assembly.LMIProblem`

    minimise c^T θ   s.t.   F_q(θ) = F0_q + Σ_i θ_i U_i C_i U_i^T ⪯ 0  (every LMI q),   θ[nonneg] ≥ 0,

as the dual-form SDP ``max b^T y, Σ y_i A_i + S = C`` (y = θ, b = −c, A_i = U_i C_i U_i^T,
C = −F0; the constraints θ_i ≥ 0 form a linear block) with a primal-dual path-following method
(HKM direction, Mehrotra predictor–corrector; Helmberg, Rendl, Vanderbei, Wolkowicz, SIAM J.
Optim. 1996; Kojima, Shindoh, Hara 1997; Monteiro 1997).  Every term is first split along the
eigenvectors of its small C_i (rank-one columns u_a with eigenvalue λ_a; identical columns, such
as the ℓ∞ border column shared by all input multipliers, merged), so F(θ) = F0 + U diag(Hθ) U^T
with a sparse H (columns × variables).  The Schur complement is then

    M = H^T (G^X ∘ G^S) H,   G^X = U^T X U,  G^S = U^T S^{-1} U   (∘: elementwise product),

formed from the stacked low-rank factors U (math.md §10): no n×n matrix per multiplier is ever
built.  U's columns are grouped by the layer blocks they touch, so the products with X and S^{-1}
are dense GEMMs on row ranges (gathers for single-entry columns).

The θ-iterates are kept *strictly feasible* (every step is accepted only after a Cholesky
factorisation of −F(θ) succeeds), starting from a cheap layer-wise point (nonneg multipliers
geometric in the depth, free ones 0, the objective variables raised until −F ≻ 0).  So when
the time or iteration budget runs out the current point is a valid (sub-optimal) answer, returned
with status ``"time_limit"``; like every backend result it is checked independently afterwards
(lipsdp.check, math.md §9).  Measurements behind the rules below: benchmarks/results-native.md.

It stops as ``"optimal"`` when the duality gap ⟨X, S⟩ + x^T s is below tol · |c^T θ| — relative
to the objective itself, which for deep contracting nets is 1e-7 or less in normalised units — and
the primal residual below 10 · max(tol, 1e-9), or at the numerical limit (within 10 × tol with
collapsing steps, or no progress for several steps at a gap below 1e-5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from lipsdp.errors import SolverError

from .base import Backend, SolveOptions, SolveResult, problem_stats

__all__ = ["NativeBackend", "layerwise_start"]


# ------------------------------------------------------------------------------------------------
# problem preparation
# ------------------------------------------------------------------------------------------------
#: columns of a dense operand per sparse product (a block that stays in cache)
_CHUNK = 32


def _spmm(A, B):
    """A @ B for a sparse CSR ``A`` and a dense ``B``, column block by column block on a thread
    pool: scipy's sparse product is single-threaded and streams all of B per nonzero row; a block
    of 32 columns stays in cache and the blocks run in parallel (scipy releases the GIL)."""
    m = B.shape[1]
    if m <= _CHUNK or A.nnz * m < 1e7:
        return np.asarray(A @ B)
    out = np.empty((A.shape[0], m))

    def block(j):
        out[:, j:j + _CHUNK] = A @ np.ascontiguousarray(B[:, j:j + _CHUNK])

    list(_pool().map(block, range(0, m, _CHUNK)))
    return out


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, 8)))
    return _POOL


class _Group:
    """Rank-one columns whose rows lie in one contiguous row range ``lo:hi`` (a slice ``cols`` of
    the LMI's column list).  ``kind``: "dense" (Ud dense), "sparse" (Ud sparse CSC) or "select"
    (one nonzero per column: u_a = v_a e_{rows_a}, so U^T Y U is a gather)."""

    def __init__(self, lo, hi, cols, Us):
        self.lo, self.hi, self.cols = lo, hi, cols
        Us = sp.csc_matrix(Us)
        nnz = np.diff(Us.indptr)
        if Us.shape[1] and np.all(nnz == 1):
            self.kind = "select"
            self.rows, self.vals = Us.indices.copy(), Us.data.copy()
        elif Us.shape[0] > 64 and Us.nnz < 0.05 * Us.shape[0] * max(Us.shape[1], 1):
            self.kind = "sparse"  # very sparse columns that are not single entries
            self.Ud, self.UdT = Us, Us.T.tocsr()
        else:
            self.kind = "dense"
            self.Ud = np.ascontiguousarray(Us.toarray())

    def right(self, Y):
        """Y @ Ud for Y with hi − lo columns."""
        if self.kind == "select":
            return Y[:, self.rows] * self.vals
        if self.kind == "sparse":
            return _spmm(self.UdT, Y.T).T
        return Y @ self.Ud

    def left(self, Y):
        """Ud^T @ Y for Y with hi − lo rows."""
        if self.kind == "select":
            return Y[self.rows] * self.vals[:, None]
        if self.kind == "sparse":
            return _spmm(self.UdT, Y)
        return self.Ud.T @ Y

    def quad_diag(self, Y):
        """diag(Ud^T Y Ud) for a square (possibly nonsymmetric) Y of order hi − lo."""
        if self.kind == "select":
            return Y[self.rows, self.rows] * self.vals ** 2
        if self.kind == "sparse":
            return np.asarray(self.Ud.multiply(self.right(Y)).sum(axis=0)).ravel()
        return np.einsum("pa,pa->a", self.Ud, self.right(Y), optimize=True)

    def outer(self, h):
        """Ud diag(h) Ud^T (dense, order hi − lo)."""
        if self.kind == "select":
            F = np.zeros((self.hi - self.lo,) * 2)
            np.add.at(F, (self.rows, self.rows), self.vals ** 2 * h)
            return F
        if self.kind == "sparse":
            return (self.Ud @ sp.diags(h) @ self.UdT).toarray()
        return (self.Ud * h) @ self.Ud.T


class _PreparedLMI:
    """One LMI in *rank-one diagonal form*: F(θ) = F0 + U diag(Hθ) U^T.

    Every term θ_v U_i C_i U_i^T is split along the eigenvectors of its small C_i
    (C_i = Q Λ Q^T, columns U_i Q; a diagonal C_i as is), identical columns are merged (the ℓ∞
    border column e_t shared by all input multipliers), and H (columns × variables, sparse)
    carries the eigenvalues.  Then, with G^X = U^T X U and G^S = U^T S^{-1} U,

        tr(A_v X A_w S^{-1}) = (H^T (G^X ∘ G^S) H)_vw,     tr(A_v Y) = (H^T diag(U^T Y U))_v,

    (∘: elementwise product) — the Schur complement is one elementwise product and two sparse
    products.  Columns are grouped by the range of layer blocks their rows touch, so products
    with U are GEMMs on row ranges (or gathers for single-entry columns).
    """

    #: from this order on, directions dS are sparse matrices when the terms' pattern is sparse
    #: (products X·dS cost n·nnz instead of n³); below it dense algebra is as fast
    SPARSE_MIN_ORDER = 1000

    def __init__(self, lmi, n_vars):
        self.n = n = int(lmi.size)
        self.F0 = np.asarray(lmi.F0.toarray(), dtype=float)
        blocks = list(lmi.blocks) if lmi.blocks and sum(lmi.blocks) == n else [n]
        bstart = np.concatenate([[0], np.cumsum(blocks)]).astype(int)
        # rank-one columns of every term: U_i Q_i with eigenvalues Λ_i
        Us, Qs, lams, owners = [], [], [], []
        for t in lmi.terms:
            C = np.asarray(t.C, dtype=float)
            C = 0.5 * (C + C.T)
            if np.count_nonzero(C - np.diag(np.diag(C))) == 0:
                lam, Q = np.diag(C).copy(), np.eye(C.shape[0])
            else:
                lam, Q = np.linalg.eigh(C)
            keep = lam != 0
            Us.append(sp.csc_matrix(t.U))
            Qs.append(Q[:, keep])
            lams.append(lam[keep])
            owners.append(np.full(int(keep.sum()), t.var))
        if Us:
            Ucols = (sp.hstack(Us, format="csc") @ sp.block_diag(Qs, format="csc")).tocsc()
            Ucols.eliminate_zeros()
            Ucols.sort_indices()
            lam = np.concatenate(lams)
            owner = np.concatenate(owners).astype(int)
        else:
            Ucols, lam, owner = sp.csc_matrix((n, 0)), np.zeros(0), np.zeros(0, dtype=int)
        # merge identical columns; group the unique ones by the blocks their rows touch
        ip, ind, dat = Ucols.indptr, Ucols.indices, Ucols.data
        uniq: dict = {}
        col_of = np.empty(Ucols.shape[1], dtype=int)
        first = []
        for j in range(Ucols.shape[1]):
            a, b = ip[j], ip[j + 1]
            key = (ind[a:b].tobytes(), dat[a:b].tobytes())
            u = uniq.get(key)
            if u is None:
                u = uniq[key] = len(first)
                first.append(j)
            col_of[j] = u
        first = np.asarray(first, dtype=int)
        rng = {}
        for u, j in enumerate(first):
            a, b = ip[j], ip[j + 1]
            if b == a:
                key = (0, 0)
            else:
                key = (int(np.searchsorted(bstart, ind[a], side="right") - 1),
                       int(np.searchsorted(bstart, ind[b - 1], side="right") - 1))
            rng.setdefault(key, []).append(u)
        order = np.concatenate([np.asarray(v, dtype=int) for _, v in sorted(rng.items())]) if rng \
            else np.zeros(0, dtype=int)
        pos = np.empty(len(first), dtype=int)
        pos[order] = np.arange(len(order))
        self.R = len(order)
        self.groups = []
        c0 = 0
        for (b0, b1), us in sorted(rng.items()):
            lo, hi = int(bstart[b0]), int(bstart[b1 + 1])
            cols = slice(c0, c0 + len(us))
            c0 += len(us)
            self.groups.append(_Group(lo, hi, cols, Ucols[:, first[np.asarray(us, dtype=int)]][lo:hi, :]))
        # H: unique column × variable, the eigenvalues summed
        self.H = sp.csr_matrix((lam, (pos[col_of], owner)), shape=(self.R, n_vars))
        self.HT = self.H.T.tocsr()
        self._sparse_terms(lmi)

    def _sparse_terms(self, lmi):
        """The terms as one sparse product (:class:`~lipsdp.backends.terms.SparseTerms`), used for
        the directions when the LMI is wide and its pattern sparse."""
        from .terms import SparseTerms

        self.sparse = False
        if not lmi.terms or self.n < self.SPARSE_MIN_ORDER:
            return
        self.terms = SparseTerms(lmi, int(max(t.var for t in lmi.terms)) + 1)
        self.sparse = self.terms.apply(np.ones(self.terms.n_vars)).nnz < 0.2 * self.n * self.n

    def direction_matrix(self, theta):
        """Σ_i θ_var(i) A_i in the form the steps use: sparse when the LMI is, else dense."""
        return self.terms.apply(theta) if self.sparse else self.apply(theta)

    # --- operators --------------------------------------------------------------------------
    def evaluate(self, theta):
        """F(θ) dense."""
        return self.F0 + self.apply(theta)

    def apply(self, theta):
        """Σ_i θ_var(i) A_i = U diag(Hθ) U^T (dense n × n)."""
        h = self.H @ theta
        F = np.zeros((self.n, self.n))
        for g in self.groups:
            if g.cols.stop > g.cols.start:
                F[g.lo:g.hi, g.lo:g.hi] += g.outer(h[g.cols])
        return F

    def UtYU(self, Y):
        """U^T Y U (dense R × R) for a dense symmetric n × n Y."""
        G = np.empty((self.R, self.R))
        YU = [g.right(Y[:, g.lo:g.hi]) for g in self.groups]
        for gi, g in enumerate(self.groups):
            for hj in range(gi, len(self.groups)):
                h = self.groups[hj]
                blk = g.left(YU[hj][g.lo:g.hi, :])
                G[g.cols, h.cols] = blk
                if hj != gi:
                    G[h.cols, g.cols] = blk.T
        return G

    def traces(self, G):
        """tr(A_v Y) per variable from G = U^T Y U."""
        return self.HT @ np.diagonal(G)

    def traces_of(self, Y):
        """tr(A_v Y) per variable for a dense (possibly nonsymmetric) n × n Y."""
        d = np.zeros(self.R)
        for g in self.groups:
            d[g.cols] = g.quad_diag(Y[g.lo:g.hi, g.lo:g.hi])
        return self.HT @ d

    def schur(self, GX, GS, chunk_rows=2048):
        """M_vw = tr(A_v X A_w S^{-1}) = (H^T (G^X ∘ G^S) H)_vw."""
        nv = self.H.shape[1]
        M = np.zeros((nv, nv))
        for a in range(0, self.R, chunk_rows):
            b = min(self.R, a + chunk_rows)
            K = GX[a:b] * GS[a:b]
            M += self.H[a:b].T @ np.asarray(self.HT @ K.T).T
        return M


# ------------------------------------------------------------------------------------------------
# products with a direction dS that is dense or sparse (wide LMIs: the pattern of the terms)
def _left_prod(A, D):
    """A @ D for a dense symmetric A and D dense or sparse (A D = (D A)^T for symmetric D)."""
    return _spmm(D, A).T if sp.issparse(D) else A @ D


def _plus(S, a, D):
    """S + a·D (a new dense matrix)."""
    if not sp.issparse(D):
        return S + a * D
    out = S.copy()
    Dc = D.tocoo()
    out[Dc.row, Dc.col] += a * Dc.data
    return out


def _inner(A, D):
    """⟨A, D⟩ = Σ A ∘ D."""
    return float(D.multiply(A).sum()) if sp.issparse(D) else float(np.sum(A * D))


def _chol(A):
    try:
        return sla.cholesky(A, lower=True, check_finite=False)
    except (np.linalg.LinAlgError, sla.LinAlgError):
        return None


def _max_step(L, D, cap=1.0):
    """Largest α ≤ cap with L L^T + α D ⪰ 0 (estimated): 1/max(0, −λ_min(L^{-1} D L^{-T})).

    Lanczos on the operator (three O(n²) products per step) instead of a dense similarity
    transform; the step is then verified by a Cholesky factorisation by the caller.
    """
    n = L.shape[0]
    if n <= 300:
        D = D.toarray() if sp.issparse(D) else D
        T = sla.solve_triangular(L, D, lower=True, check_finite=False)
        T = sla.solve_triangular(L, T.T, lower=True, check_finite=False)
        lam = float(sla.eigvalsh(0.5 * (T + T.T), subset_by_index=[0, 0], check_finite=False)[0])
    else:
        from scipy.sparse.linalg import LinearOperator, eigsh

        LT = np.ascontiguousarray(L.T)

        def mv(v):
            w = sla.solve_triangular(LT, v, lower=False, check_finite=False)
            return sla.solve_triangular(L, D @ w, lower=True, check_finite=False)

        op = LinearOperator((n, n), matvec=mv, dtype=float)
        try:
            lam = float(eigsh(op, k=1, which="SA", tol=1e-3, ncv=min(n, 24), return_eigenvectors=False)[0])
            lam = lam - 1e-2 * abs(lam)
        except Exception:  # no convergence: fall back to the dense transform
            D = D.toarray() if sp.issparse(D) else D
            T = sla.solve_triangular(L, D, lower=True, check_finite=False)
            T = sla.solve_triangular(L, T.T, lower=True, check_finite=False)
            lam = float(sla.eigvalsh(0.5 * (T + T.T), subset_by_index=[0, 0], check_finite=False)[0])
    if lam >= 0:
        return cap
    return min(cap, -1.0 / lam)


def _inv_from_chol(L):
    """(L L^T)^{-1} from the lower Cholesky factor (LAPACK potri: faster than a triangular inverse
    and a GEMM, benchmarks/results-native.md)."""
    from scipy.linalg import lapack

    A, info = lapack.dpotri(L, lower=1)
    if info != 0:  # L comes from a successful Cholesky factorisation: cannot happen
        raise SolverError(f"native solver: LAPACK potri failed (info {info}) on a Cholesky factor")
    A = np.tril(A)
    return A + np.tril(A, -1).T


def layerwise_start(depth, nonneg, obj, feasible, start=None):
    """A strictly feasible start shared by the interior-point backends, or None.  ``depth``: the
    per-variable depths, or a function returning them (called only when needed).

    The formulation's warm start ``start`` (:attr:`LMIProblem.start`) when it is feasible; else
    non-negative multipliers 2·q^depth (depth = distance of the term's own block from the last
    block), free ones 0, for q = 1, 1.5, 2, 4, 8; the objective variables at 4^k with the
    smallest feasible k ≤ 40 found by bisection (feasibility is monotone in them: their terms
    are negative semidefinite).  ``feasible(θ)`` tests −F(θ) ≻ 0.
    """
    if start is not None and feasible(np.asarray(start, dtype=float)):
        return np.asarray(start, dtype=float).copy()
    if callable(depth):  # computed only when the warm start is missing or infeasible
        depth = depth()
    for q in (1.0, 1.5, 2.0, 4.0, 8.0):
        with np.errstate(over="ignore"):
            th = np.where(nonneg, 2.0 * q ** depth, 0.0)
        if not np.all(np.isfinite(th)):
            continue
        th[obj] = 4.0 ** 40
        if not feasible(th):
            continue
        lo, hi = -1, 40
        while hi - lo > 1:
            mid = (lo + hi) // 2
            th[obj] = 4.0 ** mid
            if feasible(th):
                hi = mid
            else:
                lo = mid
        th[obj] = 4.0 ** hi
        return th
    return None


# ------------------------------------------------------------------------------------------------
# the interior-point run: its fixed data, its point and its history
# ------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """Fixed data of one solve: prepared LMIs, c, b = −c, nonneg indices, the start θ0, ν, limits."""

    nv: int
    c: np.ndarray
    b: np.ndarray
    nn: np.ndarray
    lmis: list
    theta0: np.ndarray
    nu: int
    bnorm: float
    tol: float
    max_iters: int


@dataclass
class _Point:
    """A strictly feasible primal-dual point: θ with S = −F(θ) (factors L, inverses), X ≻ 0 (factors), x, s = θ[nn]."""

    theta: np.ndarray
    Ss: list
    Ls: list
    Sinv: list
    Xs: list
    LXs: list
    x: np.ndarray
    s: np.ndarray


@dataclass
class _Trace:
    """What the stopping tests and the finish read: gap / objective / infeasibility history, the
    iterates and the best one, the last step lengths and the time of the last step."""

    best: tuple
    t_prev: float
    iterates: list = field(default_factory=list)
    hist: list = field(default_factory=list)
    objs: list = field(default_factory=list)
    pinfs: list = field(default_factory=list)
    ap: float = 0.0
    ad: float = 0.0


class NativeBackend(Backend):
    """Primal-dual interior point with low-rank Schur complement (math.md §10); feasible iterates."""

    name = "native"
    REQUIRED_MODULES = ("numpy", "scipy")
    description = "lipsdp's own interior point: low-rank Schur complement, strictly feasible iterates (anytime)"
    licence = "MIT"
    anytime = True
    accurate = True
    exploits = ("low-rank terms",)
    requires = "the monolithic LMI (not chordally decomposed: it exploits the monolithic structure itself)"
    auto_rank = 1

    @classmethod
    def accepts(cls, problem) -> bool:
        return not problem.decomposed

    @classmethod
    def memory_doubles(cls, problem) -> dict[str, float]:
        """4·R² + 3·Σ_j n_j² (R = total columns of the U_i: the P, Q, R, H matrices of math.md
        §10, and the dense S = (−M)^{-1} with its factor); no modelling layer."""
        s = problem_stats(problem)
        return {cls.name: 4.0 * float(s.R) ** 2 + 3.0 * s.sum_sq}

    def solve(self, problem, options: SolveOptions) -> SolveResult:
        if not self.accepts(problem):
            raise SolverError(
                f"native solver: expected {self.requires}; use decompose=False, or a solver for which the "
                "chordal split pays (solver='clarabel' / 'scs') with decompose=True"
            )
        return self._guarded(self._solve, problem, options)

    # ------------------------------------------------------------------------------------------
    def _start(self, problem, lmis):
        """A strictly feasible θ: the formulation's warm start, else nonneg multipliers geometric
        in the depth and the objective variables raised (layerwise_start)."""
        obj = (problem.c > 0) & problem.nonneg

        def feasible(th):
            return all(_chol(-P.evaluate(th)) is not None for P in lmis)

        th = layerwise_start(lambda: self._depths(problem, lmis), problem.nonneg, obj, feasible, problem.start)
        if th is not None:
            return th
        raise SolverError(
            "native solver: could not find a strictly feasible starting point (tried layer-wise multipliers "
            "and raising the objective variables); expected a LipSDP-type problem whose objective variables "
            "make the LMI negative definite when large; try solver='cvxopt'"
        )

    @staticmethod
    def _depths(problem, lmis):
        """Per variable: distance of its term's own block from the last block (layerwise_start)."""
        nv = problem.n_vars
        depth = np.zeros(nv)
        for P, lmi in zip(lmis, problem.lmis):
            nb = max(1, len(lmi.blocks))
            bstart = np.concatenate([[0], np.cumsum(lmi.blocks)]) if lmi.blocks else np.array([0, P.n])
            for t in lmi.terms:
                if t.U.nnz:
                    # the block on which the term is most negative (its "own" block: layer k's
                    # λ_k on block k, ℓ∞'s input τ on block 0); depth = its distance from the end
                    U = sp.csr_matrix(t.U)
                    dg = np.asarray(U.multiply(U @ t.C).sum(axis=1)).ravel()
                    per_block = np.add.reduceat(dg, bstart[:-1].astype(int)) if dg.size else dg
                    b = int(np.argmin(per_block)) if per_block.min() < 0 else \
                        int(np.searchsorted(bstart, t.U.indices.max(), side="right") - 1)
                    depth[t.var] = max(depth[t.var], nb - 1 - b)
        return depth

    def _solve(self, problem, options, t0):
        res = self._solve_split(problem, options, t0)
        if not res.extra.get("safeguard_mixed") or not np.any(~np.asarray(problem.nonneg, dtype=bool)):
            return res
        # the optimum sits at a drifting, ill-conditioned point: the MaxMin/GroupSort QC's (γ, τ) ∝ (−1, 1)
        # is a recession direction whose supremum is approached only as |γ| → ∞ (an exact penalty of
        # sum(out) = sum(in)).  Solve again with a 1e-6 ℓ1 penalty on the free multipliers (the
        # FreeSplit rewrite; the check recomputes the bound anyway); the first point stays a candidate
        left = None if options.time_limit is None else options.time_limit - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            return res
        from dataclasses import replace as _replace

        opt2 = _replace(options, time_limit=left)
        first = res
        orig = problem
        from lipsdp.reductions import FreeSplit

        split = FreeSplit(1e-6 * float(np.max(np.abs(problem.c))))
        res = self._solve_split(split.apply(problem), opt2, t0)
        if res.theta is not None:
            th = split.invert(res.theta)
            cands = [split.invert(t_) for t_ in res.extra.get("candidates", ())]
            res.theta, res.objective = th, float(orig.c @ th)
            res.extra["candidates"] = cands + [first.theta] + list(first.extra.get("candidates", ()))
            res.message = (res.message + "; " if res.message else "") + \
                "re-solved with a 1e-6 ℓ1 penalty on the free multipliers (ill-conditioned optimum)"
            res.iterations = (res.iterations or 0) + (first.iterations or 0)
            return res
        return first

    def _solve_split(self, problem, options, t0):
        """Mehrotra predictor–corrector from a strictly feasible start: each step forms the Schur
        complement, tests for stopping, takes the HKM direction and a feasible step length."""
        run = self._setup(problem, options)
        pt = self._initial_point(problem, run)
        tr = _Trace(best=(float(run.c @ pt.theta), pt.theta.copy()), t_prev=t0)
        tr.iterates.append(tr.best)
        status, msg, it = "optimal_inaccurate", "", 0
        for it in range(1, run.max_iters + 1):
            if options.time_limit is not None and time.perf_counter() - t0 > options.time_limit:
                # the set-up alone used the budget (a wide LMI): the start is the answer
                status, msg = "time_limit", f"time limit {options.time_limit} s reached"
                break
            M, ASi, mu, gauges = self._residuals(run, pt)
            stop = self._stopping(run, tr, options, it, t0, gauges)
            if stop is not None:
                status, msg = stop
                break
            dth, stp, ap, ad = self._newton_direction(run, pt, M, ASi, mu)
            pt, tr.ap, tr.ad = self._take_step(run, pt, dth, stp, ap, ad, it)
            val = float(run.c @ pt.theta)
            tr.iterates.append((val, pt.theta.copy()))
            if val < tr.best[0]:
                tr.best = (val, pt.theta.copy())
        else:
            status, msg = ("time_limit", f"iteration limit {run.max_iters} reached") if options.max_iters else \
                ("optimal_inaccurate", "iteration limit reached")
        return self._finish(run, tr, status, msg, it, t0)

    def _setup(self, problem, options):
        """The prepared LMIs, the dual data (b = −c, the nonneg indices) and the iteration limits."""
        nv = problem.n_vars
        c = np.asarray(problem.c, dtype=float)
        nn = np.flatnonzero(problem.nonneg)
        lmis = [_PreparedLMI(l, nv) for l in problem.lmis]
        theta = self._start(problem, lmis)
        b = -c
        return _Run(nv=nv, c=c, b=b, nn=nn, lmis=lmis, theta0=theta.copy(),
                    nu=sum(P.n for P in lmis) + len(nn), bnorm=1.0 + np.linalg.norm(b),
                    tol=max(float(options.tol), 1e-12), max_iters=options.max_iters or 200)

    @staticmethod
    def _initial_point(problem, run):
        """The starting primal-dual pair: S0 = −F(θ0), X0 = ξ·base·S0^{-1}, x = base / s."""
        theta = run.theta0.copy()
        # initial primal point X = S^{-1} scaled, x = 1/s
        Ss = [-P.evaluate(theta) for P in run.lmis]
        Ls = [_chol(S) for S in Ss]
        s = theta[run.nn].copy()
        Sinv = [_inv_from_chol(L) for L in Ls]
        # X0 = ξ S0^{-1}: a large ξ (far from the boundary) matters on deep contracting nets; the
        # linear block's x = 1/s stays unscaled (measured: benchmarks/results-native.md)
        base = max(1.0, abs(float(run.c @ theta)) / run.nu)
        # from the formulation's centred warm start ξ = 10 suffices
        xi = 10.0 if problem.start is not None and np.array_equal(theta, problem.start) else 100.0
        Xs = [Si * (xi * base) for Si in Sinv]
        return _Point(theta=theta, Ss=Ss, Ls=Ls, Sinv=Sinv, Xs=Xs, LXs=[_chol(X) for X in Xs], x=base / s, s=s)

    @staticmethod
    def _residuals(run, pt):
        """Schur complement M, A(S^{-1}), μ and the gauges (objective, relative gap, primal infeasibility)."""
        nv, nn = run.nv, run.nn
        M = np.zeros((nv, nv))
        AX = np.zeros(nv)
        ASi = np.zeros(nv)
        for P, X, Si in zip(run.lmis, pt.Xs, pt.Sinv):
            GX = P.UtYU(X)
            GS = P.UtYU(Si)
            M += P.schur(GX, GS)
            AX += P.traces(GX)
            ASi += P.traces(GS)
            del GX, GS
        # LP block: A_lin = −e_i on nonneg vars
        AX[nn] -= pt.x
        ASi[nn] -= 1.0 / pt.s
        M[nn, nn] += pt.x / pt.s
        rp = run.b - AX
        gap = sum(float(np.sum(X * S)) for X, S in zip(pt.Xs, pt.Ss)) + float(pt.x @ pt.s)
        mu = gap / run.nu
        pobj = float(run.c @ pt.theta)
        # relative to the objective itself (SolveOptions.tol is relative; deep contracting nets
        # have normalised objectives of 1e-7, so an absolute gap stops far too early: benchmarks/results-native.md)
        relgap = gap / max(abs(pobj), 1e-300)
        pinf = np.linalg.norm(rp) / run.bnorm
        return M, ASi, mu, (pobj, relgap, pinf)

    @staticmethod
    def _stopping(run, tr, options, it, t0, gauges):
        """(status, message) when the run stops here (optimal, numerical limit, stalled, time), else None."""
        pobj, relgap, pinf = gauges
        tol = run.tol
        if options.verbose:
            print(f"[native] it {it:3d} obj {pobj:.9g} gap {relgap:.2e} pinf {pinf:.2e} "
                  f"steps {tr.ap:.2f}/{tr.ad:.2f} t {time.perf_counter() - t0:.2f}s cpu {time.process_time():.2f}s")
        if relgap < tol and pinf < max(tol, 1e-9) * 10:
            return "optimal", ""
        if relgap < 10 * tol and pinf < max(tol, 1e-9) * 10 and min(tr.ap, tr.ad) < 0.5:
            # within 10× of the tolerance and the steps collapse (numerical limit: benchmarks/results-native.md)
            return "optimal", f"steps shrink at relative gap {relgap:.1e} (numerical limit)"
        hist, objs, pinfs = tr.hist, tr.objs, tr.pinfs
        hist.append(relgap)
        objs.append(pobj)
        pinfs.append(pinf)
        w = 3 if relgap < 1e-5 else 6  # far from optimal: a longer window (slow progress may resume)
        if (len(hist) > 8 and pinf < 1e-2  # (the early steps may raise the bound)
                and min(hist[-w:]) > 0.5 * min(hist[:-w])  # no progress in w steps:
                and min(pinfs[-w:]) > 0.5 * min(pinfs[:-w])  # nor in feasibility
                and min(objs[:-w]) - min(objs[-w:]) <= 1e-6 * abs(pobj)):  # nor in the best bound
            if relgap < 1e-5 and pinf < 1e-3:
                return "optimal", f"stalled at relative gap {relgap:.1e} (numerical limit)"
            return "optimal_inaccurate", f"stalled at relative gap {relgap:.1e}"
        now = time.perf_counter()
        step_time = now - (tr.t_prev if it > 1 else t0)  # the last Newton step's duration
        tr.t_prev = now
        # stop when the next step would likely end past the limit (a step of a wide net is long)
        if options.time_limit is not None and now - t0 + (step_time if it > 1 else 0.0) > options.time_limit:
            return "time_limit", f"time limit {options.time_limit} s reached"
        return None

    def _newton_direction(self, run, pt, M, ASi, mu):
        """Predictor (affine, σ = 0), then corrector with σ = (μ_aff / μ)³: (dθ, step, ap, ad)."""
        lmis, nn, b, nu = run.lmis, run.nn, run.b, run.nu
        Xs, Ss, Sinv, x, s = pt.Xs, pt.Ss, pt.Sinv, pt.x, pt.s
        Mf = self._factor(M)
        # --- predictor
        dth_a = self._msolve(Mf, b)
        step_a = self._direction(lmis, Xs, Sinv, x, s, nn, dth_a, mu, 0.0, None)
        ap, ad = self._steps(lmis, pt.Ls, pt.LXs, x, s, nn, step_a, dth_a)
        mu_aff = (sum(_inner(X, S) + ad * _inner(X, dS) + ap * _inner(dX, S) + ap * ad * _inner(dX, dS)
                      for X, S, dX, dS in zip(Xs, Ss, step_a[0], step_a[1]))
                  + float((x + ap * step_a[2]) @ (s + ad * step_a[3]))) / nu
        sigma = min(1.0, max(0.0, (mu_aff / mu) ** 3)) if mu > 0 else 0.0
        # --- corrector
        Ya = [_left_prod(dX, dS) @ Si for dX, dS, Si in zip(step_a[0], step_a[1], Sinv)]  # reused below
        rhs = b - sigma * mu * ASi
        for P, Y in zip(lmis, Ya):
            rhs = rhs + P.traces_of(Y)
        # LP corrector: A_lin(dx_a ds_a / s) = −dx ds / s
        rhs[nn] -= step_a[2] * step_a[3] / s
        dth = self._msolve(Mf, rhs)
        stp = self._direction(lmis, Xs, Sinv, x, s, nn, dth, mu, sigma, step_a, Ya)
        # fraction to the boundary 0.9 + 0.09·min(predictor steps) (SDPT3's rule): far from the
        # path a cautious 0.9, close to it up to 0.99 (fewer Newton steps than a fixed 0.95: benchmarks/results-native.md)
        ap, ad = self._steps(lmis, pt.Ls, pt.LXs, x, s, nn, stp, dth, min(0.99, 0.9 + 0.09 * min(ap, ad)))
        return dth, stp, ap, ad

    @staticmethod
    def _take_step(run, pt, dth, stp, ap, ad, it):
        """The next point, halving each step length until Cholesky confirms S ≻ 0 and X ≻ 0: (point, ap, ad)."""
        lmis, nn = run.lmis, run.nn
        # --- update (θ must stay strictly feasible: verified by Cholesky)
        while True:
            th_new = pt.theta + ad * dth
            # S is linear in θ: S + ad dS (dS = −A(dθ), formed for the direction) saves a
            # dense assembly per step; recomputed from θ every 10 steps against drift
            Ss_new = [-P.evaluate(th_new) for P in lmis] if it % 10 == 0 else \
                [_plus(S, ad, dS) for S, dS in zip(pt.Ss, stp[1])]
            Ls_new = [_chol(S) for S in Ss_new]
            if all(L is not None for L in Ls_new) and np.all(th_new[nn] > 0):
                break
            ad *= 0.5
            if ad < 1e-12:
                raise SolverError("native solver: step length collapsed")
        while True:
            Xn = [X + ap * dX for X, dX in zip(pt.Xs, stp[0])]
            xn = pt.x + ap * stp[2]
            LXn = [_chol(X) for X in Xn]
            if all(L is not None for L in LXn) and np.all(xn > 0):
                break
            ap *= 0.5
        new = _Point(theta=th_new, Ss=Ss_new, Ls=Ls_new, Sinv=[_inv_from_chol(L) for L in Ls_new],
                     Xs=Xn, LXs=LXn, x=xn, s=th_new[nn].copy())
        return new, ap, ad

    def _finish(self, run, tr, status, msg, it, t0):
        """The safeguarded point (a margin the check can verify) and nearby candidates, as a SolveResult."""
        c = run.c
        th, mixed = self._safeguard(run.lmis, c, tr.iterates, run.theta0, run.nn)
        best = tr.best
        # more central iterates within 1e-3 of the best objective, for the caller's check to try
        # when the best point sits too close to the boundary (api.certify keeps the smallest checked)
        near = sorted((v for v in tr.iterates if v[0] <= best[0] + 1e-3 * abs(best[0])), key=lambda v: v[0])
        cands = [t_ for _, t_ in near[1:5] if not np.array_equal(t_, th)] if mixed else []
        return SolveResult(status, th, float(c @ th), time.perf_counter() - t0, iterations=it, message=msg,
                           extra={"candidates": cands, "safeguard_mixed": mixed})

    @staticmethod
    def _safeguard(lmis, c, iterates, theta0, nn):
        """Keep −F(θ) a margin above rounding level, which the independent check needs (near the
        optimum some blocks are singular, e.g. T − W^T W in the NSR chain, or the input block of
        the ℓ∞ LMI).  The margin test is the check's: after diagonal scaling, λ_min ≥ 20 n² u.

        First try the best iterate, then slightly worse, more central ones; else mix t ∈ {1e-6 … 0.1} of the strictly feasible start θ0 into the
        multipliers (their interior margin grows by t·λ_min(−F(θ0))) while keeping the objective
        variables at the solver's values, raised by the smallest factor 1 + s that passes.  The
        bound costs ≈ s relative (the check recomputes the smallest ρ anyway)."""
        u = 2.0 ** -53
        obj = np.zeros(len(c), dtype=bool)
        obj[nn] = c[nn] > 0

        def ok(th):
            if not np.all(th[nn] >= 0):
                return False
            for P in lmis:
                A = -P.evaluate(th)
                d = np.sqrt(np.maximum(np.diag(A), 1e-300))
                As = A / d[:, None] / d[None, :]
                if _chol(As - max(20.0 * P.n * P.n * u, 1e-8) * np.eye(P.n)) is None:
                    return False
            return True

        # the iterates in order of objective: the best one, if it passes, else a slightly
        # worse but more central one (within 1e-4 relative of the best)
        iterates = sorted(iterates, key=lambda v: v[0])
        theta = iterates[0][1]
        for val, th in iterates[:8]:
            if val > iterates[0][0] + 1e-4 * abs(iterates[0][0]):
                break
            if ok(th):
                return th, False
        for t in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
            th = theta + t * (theta0 - theta)
            for s_ in (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
                th[obj] = theta[obj] * (1.0 + s_)
                if ok(th):
                    return th, True
        return theta, True  # the check will say whether it can verify this point

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _factor(M):
        M = 0.5 * (M + M.T)
        d = np.sqrt(np.maximum(np.diag(M), 1e-300))
        Ms = M / d[:, None] / d[None, :]
        for reg in (0.0, 1e-14, 1e-12, 1e-10, 1e-8):
            try:
                cf = sla.cho_factor(Ms + reg * np.eye(len(M)), lower=True, check_finite=False)
                return cf, d
            except (np.linalg.LinAlgError, sla.LinAlgError):
                continue
        # not numerically positive definite (rounding in M near the end): LU with a small shift
        return ("lu", sla.lu_factor(Ms + 1e-8 * np.eye(len(M)), check_finite=False)), d

    @staticmethod
    def _msolve(Mf, r):
        cf, d = Mf
        if isinstance(cf[0], str):
            return sla.lu_solve(cf[1], r / d, check_finite=False) / d
        return sla.cho_solve(cf, r / d, check_finite=False) / d

    @staticmethod
    def _direction(lmis, Xs, Sinv, x, s, nn, dth, mu, sigma, pred, Ya=None):
        """HKM: dS = −Σ dθ_i A_i, dX = σμ S^{-1} − X − sym(X dS S^{-1}) [− sym(dX_a dS_a S^{-1})]
        (``Ya``: the predictor's dX_a dS_a S^{-1}, already formed for the corrector's right side)."""
        dXs, dSs = [], []
        for q, (P, X, Si) in enumerate(zip(lmis, Xs, Sinv)):
            dS = -P.direction_matrix(dth)
            Y = _left_prod(X, dS) @ Si
            if pred is not None:
                Y = Y + Ya[q]
            dX = sigma * mu * Si - X - 0.5 * (Y + Y.T)
            dXs.append(0.5 * (dX + dX.T))
            dSs.append(dS)
        ds = dth[nn].copy()
        dx = sigma * mu / s - x - x * ds / s
        if pred is not None:
            dx -= pred[2] * pred[3] / s
        return dXs, dSs, dx, ds

    @staticmethod
    def _steps(lmis, Ls, LXs, x, s, nn, step, dth, frac=0.95):
        dXs, dSs, dx, ds = step
        ap = 1.0 / frac
        ad = 1.0 / frac
        for L, dS in zip(Ls, dSs):
            ad = min(ad, _max_step(L, dS, ad))
        for LX, dX in zip(LXs, dXs):
            ap = min(ap, _max_step(LX, dX, ap))
        neg = dx < 0
        if neg.any():
            ap = min(ap, float(np.min(-x[neg] / dx[neg])))
        neg = ds < 0
        if neg.any():
            ad = min(ad, float(np.min(-s[neg] / ds[neg])))
        return min(1.0, frac * ap), min(1.0, frac * ad)
