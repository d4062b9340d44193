"""Exact rewrites of an :class:`~lipsdp.assembly.LMIProblem`, stacked between a formulation and a
solver (cvxpy's "reduction" pattern: each step has ``apply`` and ``invert``).

A formulation builds the LMI of the network *as written* (original weights, original
coordinates).  The solver sees that problem after a visible chain of rewrites, and its point is
mapped back through the same chain, in reverse, before the independent check — which always works
on the original network (:mod:`lipsdp.check`), so no rewrite can weaken soundness: a wrong rewrite
can only make the check fail.  Each step is exact (same optimal value) or a tightening (a
sub-problem, marked as such), and the certificate records the chain (``Certificate.rewrites``).

* :class:`Scale` — congruence by a positive diagonal D and a rescaling of the multipliers,
  θ' = κ θ:  D F(θ) D ⪯ 0 ⇔ F(θ) ⪯ 0.  The formulations use it to normalise every layer to
  spectral norm 1 (exact for every QC family here: they are invariant under φ → φ(c·)/c).
* :class:`InputReduction` — congruence of the input block by V (orthonormal columns spanning
  every term's support there but the ρ term's): ρI − W_0^T X W_0 ⪰ 0 ⇔ ρI − V^T W_0^T X W_0 V ⪰ 0
  (math.md §3; dense operators only, V from the SVD of W_0).
* :class:`Margin` — F0 += ε on some diagonal entries: a tightening that leaves the rounding-safe
  check room (the point found is strictly feasible for the original problem).
* :class:`Subspace` — congruence by the basis N of the increments GroupSort / Householder
  layers can produce (:mod:`lipsdp.formulations.reduced`); drops the multipliers whose terms
  vanish there.
* :class:`Chordal` — the exact clique decomposition of :mod:`lipsdp.chordal` (math.md §3).
* :class:`FreeSplit` — θ_free = θ⁺ − θ⁻ with a tiny ℓ1 cost (a bounded relaxation of the free
  multipliers' recession direction; the check recomputes the bound anyway).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from .assembly import LMI, LMIProblem, LMITerm

__all__ = ["Reduction", "Scale", "InputReduction", "Margin", "Subspace", "Chordal", "FreeSplit",
           "apply_all", "invert_all"]


class Reduction:
    """One rewrite.  ``apply(problem)`` returns the new problem with this step appended to its
    ``rewrites``; ``invert(θ)`` maps a point of the new problem to one of the old."""

    name = "reduction"
    exact = True  # False: a tightening (feasible points map to feasible points; optimum may rise)

    def apply(self, problem: LMIProblem) -> LMIProblem:  # pragma: no cover - overridden
        raise NotImplementedError

    def invert(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta, dtype=float)

    def _done(self, problem: LMIProblem, **changes) -> LMIProblem:
        return replace(problem, rewrites=tuple(problem.rewrites) + (self,), **changes)

    def __repr__(self):
        return self.name


def apply_all(problem: LMIProblem, steps) -> LMIProblem:
    for step in steps:
        problem = step.apply(problem)
    return problem


def invert_all(problem: LMIProblem, theta: np.ndarray) -> np.ndarray:
    """θ of ``problem`` mapped back through every rewrite that produced it."""
    theta = np.asarray(theta, dtype=float)
    for step in reversed(tuple(problem.rewrites)):
        theta = step.invert(theta)
    return theta


def _scale_rows(U: sp.csc_matrix, r: np.ndarray) -> sp.csc_matrix:
    U = sp.csc_matrix(U, copy=True)
    U.data *= r[U.indices]
    return U


class Scale(Reduction):
    """θ'_i = κ_i θ_i and F'_q = D_q F_q D_q (``d[q]`` the diagonal of D_q, None = identity).

    Each term θ_i U C U^T becomes θ'_i (D U / √κ_i) C (D U / √κ_i)^T; the objective c_i / κ_i.
    """

    name = "normalise"

    def __init__(self, d: list, kappa: np.ndarray):
        self.d = d
        self.kappa = np.asarray(kappa, dtype=float)

    def apply(self, problem):
        k = self.kappa
        rk = 1.0 / np.sqrt(k)
        lmis = []
        for lmi, d in zip(problem.lmis, self.d):
            if d is None:
                F0 = lmi.F0
                terms = [LMITerm(t.var, t.U, np.asarray(t.C) / k[t.var]) for t in lmi.terms]
            else:
                F0 = sp.csr_matrix(sp.diags(d) @ lmi.F0 @ sp.diags(d))
                terms = [LMITerm(t.var, _scale_rows(t.U, d * rk[t.var]), t.C) for t in lmi.terms]
            lmis.append(LMI(lmi.size, F0, terms, list(lmi.blocks)))
        start = None if problem.start is None else problem.start * k
        return self._done(problem, c=problem.c / k, lmis=lmis, start=start)

    def invert(self, theta):
        return np.asarray(theta, dtype=float) / self.kappa


class InputReduction(Reduction):
    """Congruence of coordinates [0, n) of LMI ``lmi`` by V (n × r, orthonormal columns)."""

    name = "input-reduction"

    def __init__(self, V: np.ndarray, lmi: int = 0):
        self.V = np.asarray(V, dtype=float)
        self.lmi = lmi

    def apply(self, problem):
        V = self.V
        n, r = V.shape
        lmis = list(problem.lmis)
        lmi = lmis[self.lmi]
        size = lmi.size - n + r

        def congr(U):  # [V^T U_top; U_rest]
            U = sp.csc_matrix(U)
            top = sp.csc_matrix(V.T @ U[:n].toarray()) if U[:n].nnz else sp.csc_matrix((r, U.shape[1]))
            out = sp.vstack([top, U[n:]], format="csc")
            out.eliminate_zeros()
            return out

        F0 = sp.csr_matrix(lmi.F0)
        T = sp.block_diag([sp.csr_matrix(V), sp.identity(lmi.size - n)], format="csr")
        F0r = sp.csr_matrix(T.T @ F0 @ T)
        terms = [LMITerm(t.var, congr(t.U), t.C) for t in lmi.terms]
        blocks = list(lmi.blocks)
        if blocks and blocks[0] == n:
            blocks[0] = r
        lmis[self.lmi] = LMI(size, F0r, terms, blocks)
        return self._done(problem, lmis=lmis)


class Margin(Reduction):
    """F0_q += ε on the diagonal entries ``coords[q]`` (None: none) — a tightening."""

    name = "margin"
    exact = False

    def __init__(self, eps: float, coords: list):
        self.eps = float(eps)
        self.coords = coords

    def apply(self, problem):
        lmis = []
        for lmi, idx in zip(problem.lmis, self.coords):
            if idx is None or len(idx) == 0:
                lmis.append(lmi)
                continue
            add = np.zeros(lmi.size)
            add[np.asarray(idx)] = self.eps
            lmis.append(LMI(lmi.size, sp.csr_matrix(lmi.F0 + sp.diags(add)), lmi.terms, list(lmi.blocks)))
        return self._done(problem, lmis=lmis)


class Subspace(Reduction):
    """Congruence of the single LMI by N (ξ = N η) and removal of the multipliers ``drop`` (their
    terms vanish on range(N)); small terms are recompressed to their rank on the subspace."""

    name = "subspace"

    def __init__(self, N: np.ndarray, drop: np.ndarray, blocks: list):
        self.N = np.asarray(N, dtype=float)
        self.drop = np.asarray(drop, dtype=bool)
        self.blocks = [int(b) for b in blocks]

    def apply(self, problem):
        (lmi,) = problem.lmis
        N, drop = self.N, self.drop
        keep = np.flatnonzero(~drop)
        self.keep, self.n_full = keep, problem.n_vars
        newidx = np.full(problem.n_vars, -1)
        newidx[keep] = np.arange(keep.size)
        kept = [t for t in lmi.terms if not drop[t.var]]
        widths = np.array([t.U.shape[1] for t in kept])
        cstart = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        R = np.asarray(sp.hstack([t.U for t in kept], format="csc").T @ N).T  # n_η × Σ r
        terms = []
        for t, a, b in zip(kept, cstart[:-1], cstart[1:]):
            Ur, C = R[:, a:b], np.asarray(t.C, dtype=float)
            if b - a <= 8:  # drop the directions that vanish on the subspace (MaxMin λ: rank 4 → 2)
                Q, Rr = np.linalg.qr(Ur)
                e, V = np.linalg.eigh(Rr @ C @ Rr.T)
                big = np.abs(e) > 1e-11 * max(float(np.max(np.abs(e))), np.finfo(float).tiny)
                Ur, C = Q @ V[:, big], np.diag(e[big])
            if Ur.shape[1] == 0:
                continue
            terms.append(LMITerm(int(newidx[t.var]), sp.csc_matrix(Ur), C))
        F0 = np.asarray(N.T @ (lmi.F0 @ N))
        F0 = 0.5 * (F0 + F0.T)
        layout = {}
        for name, sl in problem.layout.items():
            idx = newidx[sl]
            if idx.size and np.all(idx >= 0):
                layout[name] = slice(int(idx[0]), int(idx[-1]) + 1)
        red = LMI(int(N.shape[1]), sp.csr_matrix(F0), terms, self.blocks)
        return self._done(problem, n_vars=int(keep.size), c=problem.c[keep], nonneg=problem.nonneg[keep],
                          lmis=[red], layout=layout, start=None)

    def invert(self, theta):
        th = np.zeros(self.n_full)
        th[self.keep] = np.asarray(theta, dtype=float)
        return th


class Chordal(Reduction):
    """The exact chordal decomposition (:func:`lipsdp.chordal.decompose`); θ of the original
    problem is the first ``n`` entries of the decomposed problem's point."""

    name = "chordal"

    def __init__(self, n: int | None = None):
        self.n = n

    def apply(self, problem):
        from .chordal import decompose

        return decompose(problem)  # appends Chordal(problem.n_vars) to the rewrites when it splits

    def invert(self, theta):
        return np.asarray(theta, dtype=float)[: self.n]


class FreeSplit(Reduction):
    """θ_free = θ⁺ − θ⁻ with θ± ≥ 0 and a cost eps·(θ⁺ + θ⁻) (an exact penalty that makes the
    optimum finite where the free multipliers have a recession direction: GroupSort's (γ, τ))."""

    name = "free-split"
    exact = False

    def __init__(self, eps: float):
        self.eps = float(eps)

    def apply(self, problem):
        free = np.flatnonzero(~np.asarray(problem.nonneg, dtype=bool))
        self.n, self.free = problem.n_vars, free
        if free.size == 0 or self.eps <= 0:
            return problem
        n = problem.n_vars
        neg_of = {int(v): n + j for j, v in enumerate(free)}
        lmis = []
        for lmi in problem.lmis:
            terms = list(lmi.terms)
            terms += [LMITerm(neg_of[t.var], t.U, -np.asarray(t.C)) for t in lmi.terms if t.var in neg_of]
            lmis.append(LMI(lmi.size, lmi.F0, terms, lmi.blocks))
        c = np.concatenate([problem.c, np.zeros(free.size)])
        c[free] += self.eps
        c[n:] += self.eps
        return self._done(problem, n_vars=n + free.size, c=c, nonneg=np.ones(n + free.size, dtype=bool), lmis=lmis,
                          start=None)

    def invert(self, theta):
        theta = np.asarray(theta, dtype=float)
        th = theta[: self.n].copy()
        if self.free.size and theta.size > self.n:
            th[self.free] -= theta[self.n:]
        return th
