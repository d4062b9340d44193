"""The terms of an LMI as one sparse product, for solvers that work with its sparsity.

    A(θ) = Σ_i θ_var(i) U_i C_i U_i^T = U_all C(θ) U_all^T,

U_all the terms' column blocks side by side (sparse: a convolution row has a few dozen nonzeros)
and C(θ) block diagonal with the small C_i scaled by their variables.  Written as the terms are
(no eigen-split of C_i), so the product has exactly the terms' pattern, without cancelling fill.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["SparseTerms"]


class SparseTerms:
    """``apply(θ)`` = A(θ) (sparse CSR), ``quad(W, p)`` = Σ_j p_j w_j^T A_v w_j per variable v."""

    def __init__(self, lmi, n_vars: int):
        Us, rows, cols, vals, owner = [], [], [], [], []
        k0 = 0
        for t in lmi.terms:
            C = np.asarray(t.C, dtype=float)
            C = 0.5 * (C + C.T)
            r, c = np.nonzero(C)
            rows.append(r + k0)
            cols.append(c + k0)
            vals.append(C[r, c])
            owner.append(np.full(r.size, t.var))
            Us.append(sp.csc_matrix(t.U))
            k0 += C.shape[0]
        self.n, self.n_vars, self.k = int(lmi.size), int(n_vars), k0
        self.U = sp.hstack(Us, format="csr") if Us else sp.csr_matrix((self.n, 0))
        self.UT = self.U.T.tocsr()
        cat = (lambda xs, dt=float: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt))
        self.rows, self.cols, self.vals, self.owner = cat(rows, int), cat(cols, int), cat(vals), cat(owner, int)

    def apply(self, theta) -> sp.csr_matrix:
        """Σ_i θ_var(i) A_i as a sparse CSR matrix."""
        C = sp.csr_matrix((self.vals * np.asarray(theta)[self.owner], (self.rows, self.cols)),
                          shape=(self.k, self.k))
        return (self.U @ C @ self.UT).tocsr()

    def quad(self, W: np.ndarray, p: np.ndarray) -> np.ndarray:
        """g_v = Σ_j p_j w_j^T A_v w_j for the columns w_j of W (the gradient of an eigenvalue
        function through the LMI: d(w^T F(θ) w)/dθ_v = w^T A_v w)."""
        from .native import _spmm

        Q = _spmm(self.UT, W)
        contrib = (Q[self.rows] * Q[self.cols]) @ np.asarray(p, dtype=float)
        return np.bincount(self.owner, weights=self.vals * contrib, minlength=self.n_vars)
