"""Exact elimination of what GroupSort and Householder pass through (facial reduction).

Our derivation (not in the paper).  A GroupSort group keeps its sum and a Householder group keeps
(I − vv^T)z, so for every pair of inputs Δφ − Δv ∈ range(B) with an exactly representable B
(:meth:`~lipsdp.constraints.QuadraticConstraint.free_basis`: GroupSort the differences
e_j − e_{j+1} in each group, Householder v).  The P-free LipSDP-NSR QC (λ ≥ 0, γ, τ free;
math.md §4) holds that equality only as an *exact penalty*: (γ, τ) = (−t, t) turns its γ and τ
terms into −t(Δv − Δφ)^T Π (Δv − Δφ).  Its SDP optimum is therefore approached only as t → ∞ —
not attained — and interior-point iterates drift along t and end ill-conditioned (the deep
Table-1 MaxMin networks did not converge; issue 3).

The cure is to impose the equality instead of penalising it.  Every trajectory satisfies

    Δx^k = W_{k−1} Δx^{k−1} + B_k s^k,        ξ = N η,   η = (Δx^0, s^1, …, s^l [, border]),

and on range(N) the γ and τ terms vanish identically, leaving λ_i(‖Δv_i‖² − ‖Δφ_i‖²) (each group
is 1-Lipschitz).  The reduced SDP

    minimise ρ   s.t.   N^T M(ρ, λ, θ_slope) N ⪯ 0

has ρ, one λ per group and the slope-restricted layers' multipliers; its LMI has order
n_0' + Σ_k f_k (MaxMin: half the hidden coordinates) and its optimum is attained.

* **Sound and as tight.**  Every pair of trajectories lies in range(N), so a feasible reduced
  point certifies the bound.  Any feasible point of the full problem restricts to a feasible
  reduced point (the dropped terms vanish there); conversely (Finsler's lemma) a strictly
  feasible reduced point is feasible for the full problem with γ = −t, τ = t, t large.  Same
  optimal value.  Measured on refdata: 2FC-16 22.07438 (full problem, native: 22.07445); 18FC-32
  11063.6 in 6 s (full problem: 11119 after 109 s).
* **Checked on the subspace, from the original weights.**  The independent checks
  (:func:`lipsdp.check.check_feedforward`, :func:`~lipsdp.formulations.linf.check_linf`) build N'
  again from the original W_k and bound its rounding error (:func:`lipsdp.check.on_subspace`).

Used automatically for method ``"neuron"`` whenever a layer has a free basis (see
:func:`lipsdp.formulations.formulation_for`); the solver sees only the reduced problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ..assembly import LMI, LMIProblem, LMITerm
from ..check import subspace_basis

__all__ = ["Reduced", "HIDDEN_MARGIN"]

#: added to the hidden diagonal of the (normalised) reduced LMI, like linf.MARGIN: slack in
#: every hidden direction for the rounding-safe check (costs about this much, relatively, in ρ)
HIDDEN_MARGIN = 1e-8


class Reduced:
    """Wraps a feedforward formulation (ℓ2 or ℓ∞) and solves it on the preserved subspace."""

    def __init__(self, inner, margin: float = HIDDEN_MARGIN):
        self.inner = inner
        self.margin = float(margin)
        self.frees = [qc.free_basis() for qc in inner.qcs]
        self.full: LMIProblem | None = None

    @staticmethod
    def applies(form) -> bool:
        return hasattr(form, "Wn") and any(qc.free_basis() is not None for qc in getattr(form, "qcs", ()))

    def start(self, layout, n_vars):  # the inner one's warm start is for the full problem's θ
        return None

    def __getattr__(self, name):  # naive_bound, trivial, bound_from_rho, Ws, qcs, ... of the inner one
        return getattr(self.inner, name)

    def problem(self) -> LMIProblem:
        full = self.inner.problem()
        self.full = full
        (lmi,) = full.lmis
        blocks = list(lmi.blocks)
        l = len(self.inner.qcs)
        N, _, _ = subspace_basis(self.inner.Wn, self.frees, border=sum(blocks[l + 1:]))
        fdims = [blocks[0]] + [blocks[k] if self.frees[k - 1] is None else self.frees[k - 1].shape[1]
                               for k in range(1, l + 1)] + blocks[l + 1:]
        drop = np.zeros(full.n_vars, dtype=bool)  # γ, τ: their terms vanish on the subspace
        for k, qc in enumerate(self.inner.qcs, start=1):
            if self.frees[k - 1] is not None:
                for name in qc.penalty:
                    drop[full.layout[f"layer{k}.{name}"]] = True
        keep = np.flatnonzero(~drop)
        self._keep = keep
        newidx = np.full(full.n_vars, -1)
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
        layout = {}
        for name, sl in full.layout.items():
            idx = newidx[sl]
            if idx.size and np.all(idx >= 0):
                layout[name] = slice(int(idx[0]), int(idx[-1]) + 1)
        F0 = 0.5 * (F0 + F0.T)
        # strictness margin on the hidden coordinates: the rounding-safe check needs slack in
        # every hidden direction, not only the input's (costs ~margin in ρ')
        idx = np.arange(fdims[0], fdims[0] + sum(fdims[1 : len(self.inner.qcs) + 1]))
        F0[idx, idx] += self.margin
        red = LMI(int(N.shape[1]), sp.csr_matrix(F0), terms, fdims)
        return LMIProblem(int(keep.size), full.c[keep], full.nonneg[keep], [red], layout)

    # ------------------------------------------------------------------------------------
    def recover(self, problem: LMIProblem, theta: np.ndarray):
        """The full problem's multipliers with γ = τ = 0 on the reduced layers."""
        th = np.zeros(self.full.n_vars)
        th[self._keep] = np.asarray(theta, dtype=float)
        return self.inner.recover(self.full, th)

    def check(self, rec):
        # the inner check proves the bound on the same subspace, from the original weights
        return self.inner.check(rec)
