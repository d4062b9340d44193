"""A first-order solver on the multipliers: the bound as an eigenvalue function, minimised by L-BFGS.

For the LipSDP problems with one objective variable ρ that enters as −ρ·w_i on some diagonal
entries R (ℓ2: the input block; ℓ∞: the border) and every other variable a multiplier,

    minimise ρ   s.t.   F(θ) − ρ Σ_{i∈R} w_i e_i e_i^T ⪯ 0,

the smallest feasible ρ for given multipliers θ is an eigenvalue (math.md §9, the check's
Schur complement):

    ρ(θ) = λ_max(W^{-1/2} S_0(θ) W^{-1/2}),   S_0 = F_RR + F_RH (−F_HH)^{-1} F_HR,

defined where the hidden block −F_HH(θ) ≻ 0; ρ(θ) is convex there (the feasible set of (θ, ρ) is
convex).  This backend minimises it over θ (θ ≥ 0 where the problem says so) with a projected
L-BFGS and Armijo backtracking, on the smoothed maximum f_τ = τ log Σ_j exp(λ_j / τ) ≥ λ_max with
τ decreasing in stages (3·10⁻², 10⁻², … 10⁻⁴ of the current ρ).  One evaluation costs a sparse
Cholesky factorisation of −F_HH (the terms' pattern: convolutions stay sparse), solves with |R|
right-hand sides and a dense eigendecomposition of order |R|; the gradient is

    ∂f_τ/∂θ_v = Σ_j p_j ŵ_j^T A_v ŵ_j,   ŵ_j = (v_j on R, (−F_HH)^{-1} F_HR v_j on H),

p the softmax weights — products with the sparse term columns only.  No matrix of the LMI's
order is formed densely.

What it guarantees: every point it keeps is strictly feasible for the hidden block, and its ρ is
the exact minimum for those multipliers up to rounding; the bound the user sees is still the one
the independent check (lipsdp.check) recomputes and proves.  It is a first-order method: it stops
near the optimum (status ``"optimal_inaccurate"``, or ``"time_limit"``) without a duality gap.
Measurements: benchmarks/results-cnn.md.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from lipsdp.errors import SolverError

from .base import Backend, SolveOptions, SolveResult
from .terms import SparseTerms
from lipsdp.check_sparse import SparseFactor

__all__ = ["SpectralBackend"]

#: the smoothing stages, relative to the current ρ
TAUS = (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
#: L-BFGS iterations per stage at most, and its memory
STAGE_ITERS = 100
MEMORY = 20


class _EigenForm:
    """ρ(θ) and the gradient of its smoothed version for one LMI (see the module docstring)."""

    def __init__(self, problem):
        lmi = problem.lmis[0]
        self.terms = SparseTerms(lmi, problem.n_vars)
        c = np.asarray(problem.c, dtype=float)
        self.r = int(np.flatnonzero(c)[0])
        e = np.zeros(problem.n_vars)
        e[self.r] = 1.0
        Ar = self.terms.apply(e)
        self.R = np.unique(Ar.tocoo().row)
        self.w = -np.asarray(Ar[self.R][:, self.R].diagonal(), dtype=float)
        self.H = np.setdiff1d(np.arange(lmi.size), self.R)
        self.F0 = sp.csr_matrix(lmi.F0)
        self.scale = 1.0 / np.sqrt(self.w)
        self.evals = 0

    def evaluate(self, theta, tau=None):
        """(f_τ, gradient, λ_max) at θ (ρ's entry ignored; no gradient when τ is None), or
        (inf, None, inf) outside the domain (−F_HH not positive definite)."""
        self.evals += 1
        th = np.array(theta, dtype=float)
        th[self.r] = 0.0
        F = (self.F0 + self.terms.apply(th)).tocsr()
        FH = F[self.H]
        fac = SparseFactor.of(-FH[:, self.H])
        if fac is None:
            return np.inf, None, np.inf
        Wf = fac.half(FH[:, self.R].toarray())  # L^{-1} P B: S_0 = F_RR + Wf^T Wf
        S0 = (F[self.R][:, self.R].toarray() + Wf.T @ Wf) * self.scale[:, None] * self.scale[None, :]
        lam, V = np.linalg.eigh(0.5 * (S0 + S0.T))
        lmax = float(lam[-1])
        if tau is None:
            return lmax, None, lmax
        z = (lam - lmax) / tau
        keep = z > -30.0
        p = np.exp(z[keep])
        f = lmax + tau * float(np.log(p.sum()))
        p /= p.sum()
        Vk = V[:, keep] * self.scale[:, None]
        W = np.zeros((F.shape[0], Vk.shape[1]))
        W[self.R] = Vk
        W[self.H] = fac.back(Wf @ Vk)  # (−F_HH)^{-1} B v = P^T L^{-T} (L^{-1} P B v)
        g = self.terms.quad(W, p)
        g[self.r] = 0.0
        return f, g, lmax


class SpectralBackend(Backend):
    """Projected L-BFGS on ρ(θ) = λ_max of the Schur complement (first order, sparse, anytime)."""

    name = "spectral"
    REQUIRED_MODULES = ("numpy", "scipy")
    description = ("first-order: minimises the exact ρ(multipliers) — an eigenvalue of the Schur complement — "
                   "by L-BFGS with sparse factorisations; wide CNN LMIs (anytime, no duality gap)")
    licence = "MIT"
    anytime = True
    accurate = False
    exploits = ("sparse terms", "eigenvalue form")
    requires = "one LMI whose only objective variable is a diagonal ρ (ℓ2/ℓ∞ LipSDP), not chordally decomposed"
    #: after ``chain`` (deep block-tridiagonal chains), before ``native``
    auto_rank = 0.5
    #: auto uses it on wide, sparse LMIs (convolutions): from this order on (below it the interior
    #: point reaches the optimum quickly) and with term columns this sparse (dense layers fill the
    #: factorisation: there native's steps are as cheap)
    auto_min_order = 3000
    auto_max_density = 0.05

    @classmethod
    def accepts(cls, problem) -> bool:
        c = np.asarray(problem.c, dtype=float)
        nz = np.flatnonzero(c)
        if problem.decomposed or len(problem.lmis) != 1 or nz.size != 1 or c[nz[0]] <= 0:
            return False
        if not bool(np.asarray(problem.nonneg)[nz[0]]):
            return False
        # ρ's term must be a negative diagonal
        for t in problem.lmis[0].terms:
            if t.var == nz[0]:
                C = np.asarray(t.C, dtype=float)
                if np.count_nonzero(C - np.diag(np.diag(C))) or np.any(np.diag(C) > 0):
                    return False
        return True

    @classmethod
    def memory_doubles(cls, problem) -> dict[str, float]:
        """The terms and the assembled matrix (≈ 4 × the terms' nonzeros), the sparse factor (taken
        as 10 ×), the |H| × |R| half solves and the |R|² eigenproblem."""
        lmi = problem.lmis[0]
        nnz = float(sum(t.U.nnz for t in lmi.terms)) + float(lmi.F0.nnz)
        r = float(max((t.U.shape[1] for t in lmi.terms if problem.c[t.var] > 0), default=1))
        return {cls.name: 14.0 * nnz + 3.0 * lmi.size * r + 3.0 * r * r}

    def solve(self, problem, options: SolveOptions) -> SolveResult:
        if not self.accepts(problem):
            raise SolverError(f"spectral solver: expected {self.requires}; use solver='native'")
        return self._guarded(self._solve, problem, options)

    def _solve(self, problem, options, t0):
        E = _EigenForm(problem)
        c = np.asarray(problem.c, dtype=float)
        lo = np.where(np.asarray(problem.nonneg, dtype=bool), 0.0, -np.inf)
        best = list(self._start(problem, E))
        deadline = None if options.time_limit is None else t0 + float(options.time_limit)
        status, msg = "optimal_inaccurate", "first-order method: stationary in every smoothing stage (no duality gap)"
        for tr in TAUS:
            tau = tr * max(best[0], 1e-300)
            out = _lbfgs(lambda th, tau=tau: E.evaluate(th, tau), best[1], lo, best, deadline)
            if options.verbose:
                print(f"[spectral] tau {tr:.0e} rho {best[0] * c[E.r]:.9g} evals {E.evals} "
                      f"t {time.perf_counter() - t0:.1f}s")
            if out == "time":
                status, msg = "time_limit", f"time limit {options.time_limit} s reached"
                break
        theta = best[1].copy()
        theta[E.r] = best[0] * (1.0 + 1e-9)
        return SolveResult(status, theta, float(c @ theta), time.perf_counter() - t0, iterations=E.evals,
                           message=msg)

    @staticmethod
    def _start(problem, E):
        """(ρ(θ), θ) at the formulation's warm start when its hidden block is positive definite,
        else at non-negative multipliers geometric in the depth (lipsdp.backends.native.layerwise_start)."""
        from .native import layerwise_start

        if problem.start is not None:
            start = np.asarray(problem.start, dtype=float).copy()
            lam = E.evaluate(start)[2]
            if np.isfinite(lam):
                return lam, start
        obj = np.zeros(problem.n_vars, dtype=bool)
        obj[E.r] = True
        depth = np.zeros(problem.n_vars)
        th = layerwise_start(depth, np.asarray(problem.nonneg, dtype=bool), obj,
                             lambda t: np.isfinite(E.evaluate(t)[2]))
        if th is None:
            raise SolverError("spectral solver: no multipliers with a positive definite hidden block found; "
                              "try solver='native'")
        return E.evaluate(th)[2], th


def _lbfgs(fun, x0, lo, best, deadline):
    """Projected L-BFGS with Armijo backtracking (infeasible trial points: step halved); updates
    ``best`` = [λ_max, θ] with the exact value of every accepted point.  Returns "time" when the
    deadline passed, else "done"."""
    x = x0.copy()
    f, g, _ = fun(x)
    if g is None:
        return "done"
    S, Y = [], []
    hist = [f]
    for _ in range(STAGE_ITERS):
        q = g.copy()
        alphas = []
        for s, y in reversed(list(zip(S, Y))):
            a = (s @ q) / (y @ s)
            alphas.append(a)
            q -= a * y
        if S:
            q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
        else:
            q *= 1e-2 * max(np.abs(x).max(), 1e-12) / max(np.abs(g).max(), 1e-300)
        for (s, y), a in zip(zip(S, Y), reversed(alphas)):
            q += (a - (y @ q) / (y @ s)) * s
        d = -q
        d[(x <= lo) & (d < 0)] = 0.0
        if g @ d >= 0:  # not a descent direction: restart from the projected gradient
            d = -g
            d[(x <= lo) & (d < 0)] = 0.0
            S, Y = [], []
        t = 1.0
        while t > 1e-12:
            xn = np.maximum(x + t * d, lo)
            fn, gn, lam = fun(xn)
            if gn is not None and fn <= f + 1e-4 * float(g @ (xn - x)):
                break
            t *= 0.5
            if deadline is not None and time.perf_counter() > deadline:
                return "time"
        else:
            return "done"
        if lam < best[0]:
            best[0], best[1] = lam, xn.copy()
        s, y = xn - x, gn - g
        if s @ y > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
            S.append(s)
            Y.append(y)
            if len(S) > MEMORY:
                S.pop(0)
                Y.pop(0)
        x, f, g = xn, fn, gn
        hist.append(f)
        if deadline is not None and time.perf_counter() > deadline:
            return "time"
        if len(hist) > 10 and hist[-11] - hist[-1] <= 1e-6 * abs(hist[-1]):
            return "done"
    return "done"
