"""Rounding-safe positive-definiteness proof for large sparse symmetric matrices (math.md §9).

The LMIs of CNNs (orders 5k–100k) are sparse: a convolution couples each neuron with a few
neighbours.  :func:`sparse_psd_proof` proves that a float sparse matrix A stands for a positive
semidefinite matrix with the criterion of :func:`lipsdp.check.psd_proof` (Demmel 1989; Rump, BIT
2006, "Verification of positive definiteness"), applied to a sparse factorisation with a
fill-reducing ordering: memory proportional to the fill, no solver involved.  Two engines, in
order of preference (:data:`ENGINES`): CHOLMOD's supernodal LLᵀ as bundled with cvxopt (AMD
ordering, BLAS-3 on the supernodes; used when the optional cvxopt extra is installed) and QDLDL's LDLᵀ (AMD
ordering, Apache-2.0, scalar up-looking; a core requirement, so the proof never needs GPL code).

**Criterion.**  D = diag(d), d_i = 2^−round(log₂(a_ii)/2) (exact scaling), A_s = DAD,
Ã = fl(A_s − δI).  The engine factors PᵀÃP (P its AMD permutation) without pivoting.  The proof
passes iff the factorisation runs to the end with every pivot positive and finite (CHOLMOD: no
ArithmeticError, diag(L̂) > 0; QDLDL: D̂ > 0) and the factor is finite, for

    δ = 2·( γ_k/(1 − γ_k)·tr(A_s) + γ_{inner+2}·max_i Σ_j (D|A|D)_ij ) [+ 2·extra(d)],
    γ_m = m·u/(1 − m·u), u = 2^−53.

First k = n + 3 (needs no structure).  If that fails (and n ≤ COUNT_MAX_ORDER), k = c + 3 with
c the largest number of nonzeros in a row of the computed factor (diagonal included): c is first
estimated on a diagonally dominant matrix of the same pattern, and the proof only passes if the
factor of Ã itself has no row with more than c nonzeros.  (A non-finite entry of L̂ makes a later
pivot non-finite or negative, so positive finite pivots imply a finite factor.)

**Why it holds (our derivation, following Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., Lemma 8.4, Thm 9.3 and Thm 10.3; Demmel 1989).**  In either engine each
entry of Ã is recovered from the computed factor by one inner product Σ_k L̂_ik L̂_jk (times D̂_k
for LDLᵀ), evaluated in some order and parenthesisation (up-looking for QDLDL, supernodal
left-looking with dgemm/dsyrk/dtrsm/dpotrf for CHOLMOD; no fast matrix multiplication), followed
by at most two roundings that form L̂_ij (a division, or a reciprocal and a product; a square root
for LLᵀ's diagonal; QDLDL's ŷ_j = L̂_ij D̂_j(1+θ₂)).  A product with an exact zero L̂ entry is an
exact zero and adding it is exact, so only the nonzeros of the computed factor count: at most c
terms.  Lemma 8.4 then gives, in the permuted coordinates,

    Ã + ΔA = L̂ D̂ L̂ᵀ  (D̂ = I for LLᵀ),   |ΔA| ≤ γ_{c+2} |L̂| D̂ |L̂ᵀ|.

A symmetric permutation leaves definiteness, trace and norms unchanged.  With D̂ > 0,
G = |L̂|D̂^½ gives |L̂|D̂|L̂ᵀ| = GGᵀ ⪰ 0, so ‖ΔA‖₂ ≤ γ_{c+2}·tr(GGᵀ) = γ_{c+2}·tr(Ã + ΔA) ≤
γ_{c+2}/(1 − γ_{c+2})·tr(A_s).  L̂D̂L̂ᵀ ⪰ 0 then gives A_s ⪰ δI − ΔA − E (E: the rounding of the
subtraction of δ, ‖E‖ ≤ u·max a_s,ii, covered by γ_{c+3} ≥ γ_{c+2} + u), i.e. A_s ⪰ (δ/2)I.  The
assembly rounding of A is at most γ_{inner+2}·|A| entrywise (contract of psd_proof), whose 2-norm
is at most the max row sum.  The factor 2 is the same safety margin as in the dense check.  Like
the dense path, this assumes no underflow in the factorisation (the scaling puts the diagonal in
[1/2, 2]).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .check import _gamma

__all__ = ["sparse_psd_proof", "band_wins", "sparse_solver", "SparseFactor", "ENGINES"]


def _delta(k: int, tr: float, rows: float, inner: int, extra_val: float) -> float:
    g = _gamma(k)
    return 2.0 * (g / (1 - g) * tr + _gamma(inner + 2) * rows) + 2.0 * extra_val


def _lower_pattern_pd(low: sp.coo_matrix) -> sp.coo_matrix:
    """A strictly diagonally dominant (positive definite) matrix with the pattern of the symmetric
    matrix whose lower triangle is ``low`` (returned as its lower triangle)."""
    n = low.shape[0]
    a = np.abs(low.data)
    off = low.row != low.col
    sums = np.bincount(low.row, a, minlength=n) + np.bincount(low.col[off], a[off], minlength=n)
    vals = np.where(off, a, sums[low.row] + 1.0)
    return sp.coo_matrix((vals, (low.row, low.col)), shape=low.shape)


def _shifted(low: sp.coo_matrix, delta: float) -> np.ndarray:
    vals = low.data.copy()
    vals[low.row == low.col] -= delta  # one rounding per diagonal entry (E in the module docstring)
    return vals


def _row_max(rows_of_nonzeros: np.ndarray, n: int) -> int:
    return int(np.max(np.bincount(rows_of_nonzeros, minlength=n))) if rows_of_nonzeros.size else 1


def _cholmod(low: sp.coo_matrix, delta: float, count: bool):
    """CHOLMOD supernodal LLᵀ of fl(A_s − δI) (``low`` its lower triangle) via cvxopt: (ran to the
    end with positive pivots, max nonzeros in a row of the computed L̂ or None)."""
    import cvxopt
    from cvxopt import cholmod

    n = low.shape[0]
    S = cvxopt.spmatrix(_shifted(low, delta), low.row.astype(int), low.col.astype(int), (n, n))
    saved = dict(cholmod.options)
    cholmod.options["supernodal"] = 2  # LLᵀ: a non-positive pivot stops the factorisation
    try:
        F = cholmod.symbolic(S, uplo="L")
        cholmod.numeric(S, F)
    except ArithmeticError:
        return False, None
    finally:
        cholmod.options.clear()
        cholmod.options.update(saved)
    del S
    diag = np.array(cholmod.diag(F)).ravel()
    if not (np.all(diag > 0) and np.all(np.isfinite(diag))):
        return False, None
    if not count:
        return True, None
    L = cholmod.getfactor(F)  # the computed L̂ (a copy); its nonzeros bound the terms per entry
    del F
    x = np.asarray(L.V).ravel()
    rows = np.asarray(L.I).ravel()
    del L
    if not np.all(np.isfinite(x)):
        return False, None
    return True, _row_max(rows[x != 0], n)


def _qdldl(low: sp.coo_matrix, delta: float, count: bool):
    """QDLDL LDLᵀ of fl(A_s − δI) (``low`` its lower triangle): (all D̂ positive and finite,
    structural max row count of the unit L̂)."""
    import qdldl

    n = low.shape[0]
    upper = sp.csc_matrix((_shifted(low, delta), (low.col, low.row)), shape=low.shape)
    try:
        L, D, _ = qdldl.Solver(upper).factors()
    except RuntimeError:  # an exact zero pivot (or a zero on the shifted diagonal)
        return False, None
    if not (np.all(D > 0) and np.all(np.isfinite(D)) and np.all(np.isfinite(L.data))):
        return False, None
    return True, _row_max(L.indices, n) + 1


#: orders above which the tighter margin (k = c + 3) is not tried: counting the rows of the computed
#: factor needs a copy of it (order 101 146 CNN LMI: 316 M nonzeros, 11.9 GB peak with the copy)
COUNT_MAX_ORDER = 50000

#: factorisation engines, in order of preference: name → (module it needs, function)
ENGINES = {"cholmod": ("cvxopt", _cholmod), "qdldl": ("qdldl", _qdldl)}


def _engine(name: str | None):
    import importlib.util

    if name is not None:
        if name not in ENGINES:
            raise ValueError(f"unknown sparse factorisation engine {name!r}; choose one of {list(ENGINES)}")
        return ENGINES[name][1]
    for mod, fn in ENGINES.values():
        if importlib.util.find_spec(mod) is not None:
            return fn
    raise ImportError("the sparse PSD proof needs cvxopt or qdldl: pip install qdldl")


def sparse_psd_proof(A, A_abs, inner: int, extra=None, engine: str | None = None) -> tuple[bool, float]:
    """True if the float sparse symmetric matrix A certainly stands for a PSD matrix despite rounding.

    Same contract as :func:`lipsdp.check.psd_proof`: ``A_abs`` bounds the magnitudes summed to form
    A's entries (same assembly in absolute values), ``inner`` the longest inner product length,
    ``extra(d)`` (optional) bounds ‖DFD‖₂ for a further perturbation F of A.  Returns (passed, δ),
    δ the margin of the last factorisation tried (criterion in the module docstring).
    ``engine``: a key of :data:`ENGINES` (default: the first installed).
    """
    fac = _engine(engine)
    A, A_abs = sp.csr_matrix(A, dtype=float), sp.csr_matrix(A_abs, dtype=float)
    n = A.shape[0]
    diag = A.diagonal()
    if not np.all(np.isfinite(A.data)) or np.any(diag <= 0):
        return False, float("nan")
    d = np.exp2(-np.round(0.5 * np.log2(diag)))  # exact power-of-two scaling
    Aabs = sp.csr_matrix((np.abs(A_abs.data), A_abs.indices, A_abs.indptr), shape=A_abs.shape)
    rows = float(np.max(d * (Aabs @ d)))  # max row sum of D|A_abs|D
    del Aabs
    low = sp.tril(A, format="coo")  # A_s = DAD, lower triangle (products with powers of two: exact)
    low.sum_duplicates()
    low.data = low.data * d[low.row] * d[low.col]
    tr = float(np.sum(low.data[low.row == low.col]))
    ev = 0.0 if extra is None else float(extra(d))
    delta = _delta(n + 3, tr, rows, inner, ev)
    if fac(low, delta, False)[0]:
        return True, delta
    if n > COUNT_MAX_ORDER:  # counting the factor's rows needs a copy of it (24 bytes per nonzero)
        return False, delta
    c = fac(_lower_pattern_pd(low), 0.0, True)[1]  # the pattern's row count (an estimate for CHOLMOD)
    for _ in range(3):
        if c is None or c >= n:
            return False, delta
        delta = _delta(c + 3, tr, rows, inner, ev)
        ok, c_used = fac(low, delta, True)
        if not ok:
            return False, delta
        if c_used <= c:  # the factor of Ã itself has at most c nonzeros per row: the bound holds
            return True, delta
        c = c_used
    return False, delta


def band_wins(A) -> np.ndarray | None:
    """A symmetric ordering under which LAPACK's banded Cholesky is the cheaper proof, or None.

    Reverse Cuthill–McKee bandwidth u: band storage (u + 1)·n within 4·nnz(A) means the band adds
    little fill and dpbtrf's blocked kernels win (block-tridiagonal LMIs of MLP chains); otherwise
    (convolutions: u comparable to n) the AMD-ordered sparse factorisation wins (benchmarks/results-sparsecheck.md).
    """
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    A = sp.csr_matrix(A)
    n = A.shape[0]
    C = A.tocoo()
    u = int(np.max(np.abs(C.col - C.row))) if C.nnz else 0
    if (u + 1) * n <= 4 * max(A.nnz, n):
        return np.arange(n)
    p = reverse_cuthill_mckee(A, symmetric_mode=True)
    inv = np.empty(n, dtype=int)
    inv[p] = np.arange(n)
    u = int(np.max(np.abs(inv[C.col] - inv[C.row]))) if C.nnz else 0
    return p if (u + 1) * n <= 4 * max(A.nnz, n) else None


class SparseFactor:
    """A numerical sparse Cholesky factorisation P A P^T = L L^T (CHOLMOD, from the optional
    cvxopt, else QDLDL's L D L^T as L = U D^{1/2}) with solves and the two half solves
    (``half``: L^{-1} P B, ``back``: P^T L^{-T} Y).  A solver, not a proof."""

    @classmethod
    def of(cls, A):
        """The factorisation of the sparse symmetric A, or None if A is not positive definite."""
        A = sp.csc_matrix(A, dtype=float)
        self = cls()
        self.n = A.shape[0]
        if ENGINES and _engine(None) is _cholmod:
            import cvxopt
            from cvxopt import cholmod

            C = sp.tril(A, format="coo")
            S = cvxopt.spmatrix(C.data, C.row.astype(int), C.col.astype(int), (self.n, self.n))
            saved = dict(cholmod.options)
            cholmod.options["supernodal"] = 2
            try:
                self.F = cholmod.symbolic(S, uplo="L")
                cholmod.numeric(S, self.F)
            except ArithmeticError:
                return None
            finally:
                cholmod.options.clear()
                cholmod.options.update(saved)
            self.kind = "cholmod"
            return self
        import qdldl

        try:
            L, D, p = qdldl.Solver(sp.triu(A, format="csc")).factors()
        except RuntimeError:
            return None
        if not (np.all(D > 0) and np.all(np.isfinite(D))):
            return None
        self.U = (sp.identity(self.n, format="csr") + L.tocsr()).tocsr()  # A[p][:, p] = U D U^T
        self.Ut, self.sqrtD, self.p, self.kind = self.U.T.tocsr(), np.sqrt(D), p, "qdldl"
        return self

    def _cholmod(self, B, *systems):
        import cvxopt
        from cvxopt import cholmod

        X = cvxopt.matrix(np.asarray(B, dtype=float))
        for sys_ in systems:
            cholmod.solve(self.F, X, sys=sys_)
        return np.array(X)

    def half(self, B):
        """L^{-1} P B (so that B^T A^{-1} B = (L^{-1} P B)^T (L^{-1} P B))."""
        B = B.toarray() if sp.issparse(B) else B
        if self.kind == "cholmod":
            return self._cholmod(B, 7, 4)  # x = P b, then L x = b
        from scipy.sparse.linalg import spsolve_triangular

        Y = spsolve_triangular(self.U, np.asarray(B, dtype=float)[self.p], lower=True, unit_diagonal=True)
        return Y / self.sqrtD[:, None]

    def back(self, Y):
        """P^T L^{-T} Y (so that A^{-1} B = back(half(B)))."""
        if self.kind == "cholmod":
            return self._cholmod(Y, 5, 8)  # L^T x = b, then x = P^T b
        from scipy.sparse.linalg import spsolve_triangular

        Z = spsolve_triangular(self.Ut, np.asarray(Y, dtype=float) / self.sqrtD[:, None], lower=False,
                               unit_diagonal=True)
        X = np.empty_like(Z)
        X[self.p] = Z
        return X


    def solve(self, B):
        """A^{-1} B."""
        return self.back(self.half(B))


def sparse_solver(A):
    """("sparse", solve) for the sparse symmetric positive definite A (the first engine of
    :data:`ENGINES`), or None if a pivot is not positive.  A numerical solver, not a proof:
    :func:`lipsdp.check._finish` uses it for the Schur complement that gives ρ_min, which the
    proof then verifies."""
    f = SparseFactor.of(A)
    return None if f is None else ("sparse", f.solve)
