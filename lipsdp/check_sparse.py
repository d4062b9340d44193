"""Rounding-safe positive-definiteness proof for large sparse symmetric matrices (math.md §9).

The LMIs of CNNs (orders 5k–100k) are sparse: a convolution couples each neuron with a few
neighbours.  :func:`sparse_psd_proof` proves that a float sparse matrix A stands for a positive
semidefinite matrix with the same criterion as :func:`lipsdp.check.psd_proof` (Demmel 1989; Rump,
BIT 2006, "Verification of positive definiteness"), applied to a sparse LDLᵀ factorisation with a
fill-reducing ordering (QDLDL with AMD, Apache-2.0): memory proportional to the fill, no solver
involved.

**Criterion.**  D = diag(d), d_i = 2^−round(log₂(a_ii)/2) (exact scaling), A_s = DAD,
Ã = fl(A_s − δI).  QDLDL factors PᵀÃP = L̂D̂L̂ᵀ (P the AMD permutation, L̂ unit lower triangular)
without pivoting.  The proof passes iff every computed pivot is positive and finite (D̂ > 0) and
L̂ is finite, for

    δ = 2·( γ_k/(1 − γ_k)·tr(A_s) + γ_{inner+2}·max_i Σ_j (D|A|D)_ij ) [+ 2·extra(d)],
    γ_m = m·u/(1 − m·u), u = 2^−53,  k = c + 3,

c the largest number of nonzeros in a row of L̂ (unit diagonal included; structural count, so an
upper bound on the terms of any inner product of the factorisation).  When the proof with
k = n + 3 (no structure needed) fails, k = c + 3 is tried on the same pattern.

**Why it holds (our derivation, following Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., Lemma 8.4 and Thm 9.3; Demmel 1989).**  QDLDL computes row r of L̂ by a
sparse forward substitution y = L̂⁻¹ã (column r of the upper triangle), then L̂_rj = fl(ŷ_j·fl(1/D̂_j))
and D̂_r = fl(ã_rr − Σ_j ŷ_j L̂_rj).  Every entry of Ã is therefore an inner product of at most c
terms plus two roundings linking ŷ_j to L̂_rj D̂_j (ŷ_j = L̂_rj D̂_j(1+θ₂)), so by Lemma 8.4 in any
summation order (fused multiply-adds only remove roundings)

    Ã + ΔA = L̂ D̂ L̂ᵀ,   |ΔA| ≤ γ_{c+2} |L̂| D̂ |L̂ᵀ|    (in the permuted coordinates).

Structural zeros are exact zeros: the sparse algorithm performs the operations of the dense one
minus products with an exact zero factor, which contribute exactly 0 (the same argument carries
the dense analysis to any symmetric permutation PᵀÃP, which leaves definiteness, trace and the
norms unchanged).  With D̂ > 0, G = |L̂|D̂^½ gives |L̂|D̂|L̂ᵀ| = GGᵀ ⪰ 0, so
‖ΔA‖₂ ≤ γ_{c+2}·tr(GGᵀ) = γ_{c+2}·tr(Ã + ΔA) ≤ γ_{c+2}/(1 − γ_{c+2})·tr(A_s).  L̂D̂L̂ᵀ ⪰ 0 then
gives A_s ⪰ δI − ΔA − E (E: the rounding of the subtraction of δ, ‖E‖ ≤ u·max a_s,ii, covered by
γ_{c+3} ≥ γ_{c+2} + u), i.e. A_s ⪰ (δ/2)I; the assembly rounding of A is at most
γ_{inner+2}·|A| entrywise (contract of psd_proof), ‖·‖₂ ≤ the max row sum.  The factor 2 is the
same safety margin as in the dense check.  Like the dense path, this assumes no underflow in the
factorisation (the scaling puts the diagonal in [1/2, 2]).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .check import _gamma

__all__ = ["sparse_psd_proof", "band_wins", "ldl_solver"]


def _delta(k: int, tr: float, rows: float, inner: int, extra_val: float) -> float:
    g = _gamma(k)
    return 2.0 * (g / (1 - g) * tr + _gamma(inner + 2) * rows) + 2.0 * extra_val


def _ldl_positive(As: sp.csr_matrix, delta: float):
    """(passed, c): QDLDL of fl(As − δI) has all pivots positive and finite; c = max row count of
    the unit L̂ (None if the factorisation stopped at an exact zero pivot)."""
    import qdldl

    n = As.shape[0]
    At = sp.triu(As, format="csc")
    At.setdiag(At.diagonal() - delta)  # one rounding per diagonal entry (E in the docstring)
    try:
        L, D, _ = qdldl.Solver(At).factors()
    except RuntimeError:  # an exact zero pivot (or a zero on the shifted diagonal)
        return False, None
    c = int(np.max(np.bincount(L.indices, minlength=n))) + 1 if L.nnz else 1
    ok = bool(np.all(D > 0) and np.all(np.isfinite(D)) and np.all(np.isfinite(L.data)))
    return ok, c


def sparse_psd_proof(A, A_abs, inner: int, extra=None) -> tuple[bool, float]:
    """True if the float sparse symmetric matrix A certainly stands for a PSD matrix despite rounding.

    Same contract as :func:`lipsdp.check.psd_proof`: ``A_abs`` bounds the magnitudes summed to form
    A's entries (same assembly in absolute values), ``inner`` the longest inner product length,
    ``extra(d)`` (optional) bounds ‖DFD‖₂ for a further perturbation F of A.  Returns (passed, δ),
    δ the margin of the last factorisation tried (criterion in the module docstring).
    """
    A, A_abs = sp.csr_matrix(A, dtype=float), sp.csr_matrix(A_abs, dtype=float)
    n = A.shape[0]
    diag = A.diagonal()
    if not np.all(np.isfinite(A.data)) or np.any(diag <= 0):
        return False, float("nan")
    d = np.exp2(-np.round(0.5 * np.log2(diag)))  # exact power-of-two scaling
    Dg = sp.diags(d)
    As = (Dg @ A @ Dg).tocsr()
    rows = float(np.max(np.asarray(abs(Dg @ A_abs @ Dg).sum(axis=1)).ravel()))
    tr = float(As.diagonal().sum())
    ev = 0.0 if extra is None else float(extra(d))
    delta = _delta(n + 3, tr, rows, inner, ev)
    ok, c = _ldl_positive(As, delta)
    if ok or c is None or c + 3 >= n + 3:
        return ok, delta
    delta = _delta(c + 3, tr, rows, inner, ev)  # the same pattern: c is still the row-count bound
    return _ldl_positive(As, delta)[0], delta


def band_wins(A) -> np.ndarray | None:
    """A symmetric ordering under which LAPACK's banded Cholesky is the cheaper proof, or None.

    Reverse Cuthill–McKee bandwidth u: band storage (u + 1)·n within 4·nnz(A) means the band adds
    little fill and dpbtrf's blocked kernels win (block-tridiagonal LMIs of MLP chains); otherwise
    (convolutions: u comparable to n) the AMD-ordered sparse LDLᵀ wins (benchmarks/results-sparsecheck.md).
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


def ldl_solver(A):
    """("ldl", solve) for the sparse symmetric positive definite A (AMD-ordered QDLDL), or None if a
    pivot is not positive.  A numerical solver, not a proof: :func:`lipsdp.check._finish` uses it
    for the Schur complement that gives ρ_min, which the proof then verifies."""
    import qdldl
    from scipy.sparse.linalg import spsolve_triangular

    n = A.shape[0]
    try:
        L, D, p = qdldl.Solver(sp.triu(A, format="csc")).factors()
    except RuntimeError:
        return None
    if not (np.all(D > 0) and np.all(np.isfinite(D))):
        return None
    U = (sp.identity(n, format="csr") + L.tocsr()).tocsr()  # A[p][:, p] = U diag(D) Uᵀ
    Ut = U.T.tocsr()

    def solve(B):
        B = np.asarray(B.toarray() if sp.issparse(B) else B, dtype=float)
        Y = spsolve_triangular(U, B[p], lower=True, unit_diagonal=True)
        Y = (Y.T / D).T
        Z = spsolve_triangular(Ut, Y, lower=False, unit_diagonal=True)
        X = np.empty_like(Z)
        X[p] = Z
        return X

    return ("ldl", solve)
