"""A barrier solver for block-tridiagonal LMI problems, linear in depth ("chain").

**The inequality.**  It solves the solver-neutral :class:`~lipsdp.assembly.LMIProblem`

    minimise c^T θ   s.t.   F(θ) = F0 + Σ_i θ_i U_i C_i U_i^T ⪯ 0,   θ[nonneg] ≥ 0,

when every LMI is *block tridiagonal* in its coordinate blocks (``LMI.blocks``): F0 has no entries
outside the band, and every term's U touches at most two adjacent blocks (a term with a diagonal C
that touches non-adjacent blocks, such as the ℓ∞ input multipliers τ_i on the input and border
blocks, is split into its rank-1 columns).  That is the LipSDP LMI of every feedforward network
(math.md §2, §4, §6): block k is the layer x^k, and the multipliers of layer k couple blocks k−1
and k.  :meth:`ChainBackend.accepts` tells from the declared structure; other problems raise
:class:`~lipsdp.errors.SolverError` (use ``solver="native"``).

**The method** (our implementation of textbook pieces).  Log-barrier path following on
f_μ(θ) = c^T θ / μ − log det(−F(θ)) − (bound terms), with Newton steps solved *matrix-free*:
nothing of order n × n (n = LMI order) or m × m (m = number of multipliers) is ever formed.

* band.py — the band of S = −F(θ) and its algebra: block LDL^T (feasibility test and log det),
  selected inversion (the band of S^{-1}, which is all the gradient tr(A_i S^{-1}) needs) and its
  derivative (Hessian-vector products); the low-rank trace identities of math.md §10 per block;
* precond.py — CG for the Newton system with the preconditioner "block Jacobi over the layers +
  the low-rank part carried by S's smallest eigenpairs", and the strictly feasible start;
* solver.py — the iteration (:class:`ChainBackend`): model, direction, stopping, line search.

Every operation is O(depth · w³) for layers of width w; the numbers of Newton steps and CG
iterations still grow with the depth (measurements: benchmarks/results-chain.md).

**The guarantee.**  Every iterate is strictly feasible (accepted only after a successful block
Cholesky of −F(θ)), so the solver is *anytime*: stopped by ``time_limit`` or ``max_iters`` it
returns the lowest-objective iterate so far, with status ``"time_limit"``.  It stops as
``"optimal"`` when the duality-gap estimate ν_eff·μ (or ν·μ) is below tol · |c^T θ|.  The returned
θ is kept a rounding-level margin inside the cone (the check's requirement); as for every backend,
it is a certificate only after the independent float64 check (lipsdp.check, math.md §9).
"""

from __future__ import annotations

from .band import _Chain, band_violation
from .solver import ChainBackend

__all__ = ["ChainBackend", "band_violation"]
