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
  optimal value (measured on the refdata MaxMin nets: README, "Methods").
* **Checked on the subspace, from the original weights.**  The independent checks
  (:func:`lipsdp.check.check_feedforward`, :func:`~lipsdp.formulations.linf.check_linf`) build N'
  again from the original W_k and bound its rounding error (:func:`lipsdp.check.on_subspace`).

Applied by the feedforward formulations (ℓ2 and ℓ∞) whenever a layer has a free basis, as the
:class:`~lipsdp.reductions.Subspace` rewrite built by :func:`subspace_reduction`; the solver sees
only the reduced problem.
"""

from __future__ import annotations

import numpy as np

from ..check import subspace_basis
from ..reductions import Subspace

__all__ = ["subspace_reduction", "HIDDEN_MARGIN"]

#: added to the hidden diagonal of the (normalised) reduced LMI, like linf.MARGIN: slack in
#: every hidden direction for the rounding-safe check (costs about this much, relatively, in ρ)
HIDDEN_MARGIN = 1e-8


def subspace_reduction(Wn, qcs, frees, layout: dict, border: int = 0) -> Subspace:
    """The :class:`~lipsdp.reductions.Subspace` rewrite of a feedforward LMI whose blocks are
    (Δx^0, Δx^1, …, Δx^l[, border]) in the coordinates of ``Wn`` (the normalised, input-reduced
    weights the solver's problem is written in).  Drops the penalty multipliers (γ, τ) of every
    layer with a free basis: their terms vanish on the subspace."""
    N, _, _ = subspace_basis(Wn, frees, border=border)
    l = len(qcs)
    fdims = [Wn[0].shape[1]] + [Wn[k].shape[1] if frees[k - 1] is None else frees[k - 1].shape[1]
                                for k in range(1, l + 1)] + ([border] if border else [])
    n_vars = max(sl.stop for sl in layout.values())
    drop = np.zeros(n_vars, dtype=bool)
    for k, qc in enumerate(qcs, start=1):
        if frees[k - 1] is not None:
            for name in qc.penalty:
                drop[layout[f"layer{k}.{name}"]] = True
    return Subspace(N, drop, fdims)
