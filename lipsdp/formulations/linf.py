"""ℓ∞ bounds for a scalar output of a feedforward network (LipSDP-NSR Theorems 2–3, math.md §6).

For a scalar output y = c^T f(x) (one logit: c = e_k; or a margin direction c) we certify

    |c^T (f(x) − f(x'))|  ≤  ρ ‖x − x'‖_∞        (bound = ρ, no square root).

**The LMI (our derivation, in lipsdp's NSD convention F0 + Σ θ U C U^T ⪯ 0).**  Coordinates
ξ = (Δx^0, Δx^1, …, Δx^l, t) — the layer increments plus one *border* coordinate t.  With
w = c^T W_l, multipliers τ ∈ R^{n_0}_{≥0} and any QC family Q_k (slope-restricted, GroupSort,
Householder; the same blocks as the ℓ2 formulation, L_k = [W_{k−1} E_{k−1}; E_k])::

    M(ρ, τ, θ) = Σ_k L_k^T Q_k(θ_k) L_k  −  E_0^T diag(τ) E_0
                 − (e_t w E_l + E_l^T w^T e_t^T)  +  (1^T τ − 2ρ) e_t e_t^T   ⪯ 0.

Proof sketch: along trajectories every L_k^T Q_k L_k term is ≥ 0 (the QC), so ξ^T M ξ ≤ 0 gives
Δx^0ᵀ diag(τ) Δx^0 + 2 t y + t² (2ρ − 1^T τ) ≥ 0 with y = w Δx^l.  For ‖Δx^0‖_∞ = r take
t = ∓r: Δx^0ᵀ diag(τ) Δx^0 ≤ r² 1^T τ (τ ≥ 0), hence ±2 r y ≤ 2 r² ρ, i.e. |y| ≤ ρ r.
With S = P = 0 it is the chain diag(τ) ⪰ W_0^T T_1 W_0, T_k ⪰ W_k^T T_{k+1} W_k,
[[T_l, w^T], [w, 2ρ − 1^T τ]] ⪰ 0 of math.md §6.  No input reduction: τ is per coordinate.

**Normalisation (derived; the :class:`~lipsdp.reductions.Scale` rewrite).**  W_k = s_k W'_k,
σ_k = Π_{j<k} s_j, x^k = σ_k x'^k, t = t'.  Every QC is homogeneous of degree 2 and linear in θ,
and w Δx^l = σ_{l+1} w' Δx'^l, so M(ρ, τ, θ) in the original coordinates equals
σ_{l+1} · M'(ρ', τ', θ') with

    ρ = σ_{l+1} ρ',   τ = σ_{l+1} τ',   θ_k = σ_{l+1} θ'_k / σ_k²,

i.e. a congruence by D = diag(σ_k/√σ_{l+1} on block k, 1/√σ_{l+1} on t).  A strictness margin
(:data:`MARGIN`, a tightening) is then added on the non-border diagonal.  The check always
rebuilds M on the ORIGINAL weights.

**Check.**  ρ enters only M_tt (coefficient −2).  With H = M without the border row/column
(must be ≺ 0) and m = M[:−1, t]:  ρ_min = (M0_tt + m^T (−H)^{-1} m) / 2 (Schur complement);
then the rounding-safe Cholesky proof :func:`lipsdp.check.psd_proof` on −M(ρ') for
ρ' = ρ_min (1 + step).

**Naive bound.**  Π_{k<l} ‖W_k‖_{∞→∞} · Lip_∞(φ_k) · ‖w‖_1 (GroupSort sorts: 1; slope
restricted: max(|α|, |β|); Householder: max over pieces of ‖I − 2vv^T‖_{∞→∞}, ≥ 1).

Pauli et al., "Novel Quadratic Constraints for Extending LipSDP beyond Slope-Restricted
Activations", ICLR 2024 (arXiv 2401.14033), §4 (ℓ∞ bounds).
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

from ..assembly import LMI, LMIProblem, LMITerm, Layout
from ..check import CheckResult, assemble, feedforward_blocks, on_subspace, prove_rho
from ..errors import FormulationError
from ..ir import Network
from ..reductions import Margin, Scale
from .base import Formulation, Recovered
from .feedforward import FeedforwardFamily

__all__ = ["FeedforwardLinf", "MaxOverOutputs", "RecoveredLinf", "check_linf", "naive_linf", "activation_lip_inf"]

#: strictness margin added to the non-border diagonal of F0 in the solver's (normalised)
#: problem, so that the solver's point has a strictly negative definite H and the exact
#: Schur-complement check has room.  Costs ≈ MARGIN · (n_0 + N) / 2 in ρ' (negligible).
MARGIN = 1e-6

#: kept for compatibility: ℓ∞ recoveries are :class:`~lipsdp.formulations.base.Recovered` with ``tau``
RecoveredLinf = Recovered


def activation_lip_inf(act) -> float:
    """ℓ∞ → ℓ∞ Lipschitz constant of one activation layer (used by the naive bound)."""
    return float(act.lipschitz_inf)


def naive_linf(Ws, activations=()) -> float:
    """Π_{k<l} ‖W_k‖_{∞→∞} · Lip_∞(φ_k) · ‖w‖_1 with w = the (scalar-output) last row."""
    def row_sums(W):
        A = W.abs().to_sparse() if hasattr(W, "abs") else abs(W)
        return np.asarray(A.sum(axis=1)).ravel()

    val = float(np.prod([np.max(row_sums(W)) for W in Ws[:-1]])) if len(Ws) > 1 else 1.0
    val *= float(np.prod([activation_lip_inf(a) for a in activations])) if activations else 1.0
    return val * float(np.sum(row_sums(Ws[-1])))


class FeedforwardLinf(FeedforwardFamily):
    """ℓ∞ bound of a scalar output c^T f of a feedforward network (see the module docstring)."""

    norm = "linf"

    def __init__(self, network: Network, method: str = "neuron", output=None):
        if isinstance(network, Network) and output is None:
            if network.output_dim != 1:
                raise FormulationError(
                    f"norm='linf' bounds one scalar output but the network has {network.output_dim} outputs; "
                    "pass output=k (a logit) or output=c (a vector), or call lipsdp.certify(..., norm='linf') "
                    "without output to get every logit's bound and their maximum"
                )
            output = 0
        super().__init__(network, method, output)

    def naive_bound(self) -> float:
        return naive_linf(self.ops, self.network.activations)

    def bound_from_value(self, rho: float) -> float:
        return float(rho)

    @property
    def check_order(self) -> int:
        return int(sum(self.dims())) + 1

    def build(self) -> LMIProblem:
        dims = self.dims()
        off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
        t = int(off[-1])
        size = t + 1
        n0 = dims[0]
        layout = Layout([("rho", 1, True), ("tau", n0, True)], self.qcs)
        self._layout = layout.slices
        terms = [LMITerm(0, sp.csc_matrix(([1.0], ([t], [0])), shape=(size, 1)), np.array([[-2.0]]))]
        Ctau = np.diag([-1.0, 1.0])
        for i in range(n0):
            U = sp.csc_matrix(([1.0, 1.0], ([i, t], [0, 1])), shape=(size, 2))
            terms.append(LMITerm(1 + i, U, Ctau))
        terms += self._qc_terms(layout, off, size)
        w = self.ops[-1].to_dense().ravel()
        F0 = sp.lil_matrix((size, size))
        F0[off[-2]:off[-1], t] = -w[:, None]
        F0[t, off[-2]:off[-1]] = -w[None, :]
        return LMIProblem(layout.n_vars, layout.objective(), layout.nonneg, [LMI(size, F0.tocsr(), terms, dims + [1])],
                          layout.slices)

    def reductions(self) -> list:
        sig, dims = self.sigma, self.dims()
        l = len(self.qcs)
        out = sig[l + 1]
        d = np.concatenate([np.full(n, sig[k] / math.sqrt(out)) for k, n in enumerate(dims)] + [[1.0 / math.sqrt(out)]])
        kappa = np.empty(max(sl.stop for sl in self._layout.values()))
        kappa[self._layout["rho"]] = 1.0 / out
        kappa[self._layout["tau"]] = 1.0 / out
        for k, qc in enumerate(self.qcs, start=1):
            for p in qc.params():
                kappa[self._layout[f"layer{k}.{p.name}"]] = sig[k] ** 2 / out
        t = int(sum(dims))
        return [Scale([d], kappa), Margin(MARGIN, [np.arange(t)])] + self._subspace_steps(border=1)

    def check(self, rec) -> CheckResult:
        return check_linf(self.Ws, self.qcs, rec.layers, rec.tau)


def check_linf(Ws, qcs, values, tau) -> CheckResult:
    """Independent float64 check of an ℓ∞ certificate (module docstring), original weights.

    Ws: W_0..W_l with the last one the scalar-output row w (1 × n_l); qcs, values: one QC and
    one multiplier dict per hidden layer; tau: the input multipliers (≥ 0 after projection).
    Returns the checked ρ' (bound = ρ').  ρ enters only M_tt, with coefficient −2.
    """
    t0 = time.perf_counter()
    w = np.asarray(Ws[-1].toarray() if sp.issparse(Ws[-1]) else Ws[-1], dtype=float).ravel()
    l = len(qcs)
    if l == 0:  # f = w^T x: the ℓ∞ constant is exactly ‖w‖_1 (fsum is correctly rounded)
        r = float(np.nextafter(math.fsum(np.abs(w)), np.inf))
        return CheckResult(True, r, r, 0.0, "exact: a linear scalar map has ℓ∞ constant ‖w‖_1",
                           time.perf_counter() - t0)
    dims = [W.shape[1] for W in Ws]  # n_0 .. n_l
    n0 = dims[0]
    tau = np.maximum(np.asarray(tau, dtype=float).ravel(), 0.0)
    if tau.shape[0] != n0:
        raise FormulationError(f"check_linf: expected {n0} input multipliers tau, got {tau.shape[0]}")
    s = math.fsum(tau)
    border = [(0, 0, -np.diag(tau), np.diag(tau)),
              (l, l + 1, -w[:, None], np.abs(w)[:, None]), (l + 1, l, -w[None, :], np.abs(w)[None, :]),
              (l + 1, l + 1, np.array([[s]]), np.array([[s]]))]
    M, Mabs = assemble(dims + [1], list(feedforward_blocks(Ws, qcs, values)) + border)
    inner = max(max(W.shape) for W in Ws) + n0
    extra = None
    frees = [qc.free_basis() for qc in qcs]
    if any(B is not None for B in frees):  # on the preserved subspace (lipsdp.check.on_subspace)
        M, Mabs, inner, extra = on_subspace(M, Mabs, inner, Ws, frees, (np.array([-1]), 2.0), border=1)
    return prove_rho(M, Mabs, [M.shape[0] - 1], 2.0, inner, extra, t0)


class MaxOverOutputs(Formulation):
    """ℓ∞ → ℓ∞ bound of a vector-valued network: the maximum over its outputs k of the ℓ∞ → |·|
    bounds of f_k (:class:`FeedforwardLinf`, one SDP each):

        max_k sup |f_k(x) − f_k(x')| / ‖x − x'‖_∞  is the ℓ∞ → ℓ∞ Lipschitz constant.

    The combined certificate carries ``per_output`` (one checked bound per logit) and is verified
    only if every logit's is.
    """

    norm = "linf"

    def __init__(self, network: Network, method: str = "neuron", output=None, part=FeedforwardLinf):
        super().__init__(network, method, None)
        self.network = network
        self._parts = [part(network, method, k) for k in range(network.output_dim)]
        self.qcs = self._parts[0].qcs

    def parts(self):
        return list(self._parts)

    def combine(self, certs):
        worst = max(range(len(certs)), key=lambda k: certs[k].bound)
        cert = certs[worst]
        cert.per_output = [float(c.bound) for c in certs]
        cert.verified = all(c.verified for c in certs)
        cert.naive_bound = max(float(c.naive_bound) for c in certs)
        lbs = [c.lower_bound for c in certs if c.lower_bound is not None]
        cert.lower_bound = max(lbs) if lbs else None
        cert.output = None
        cert.timings = {k: sum(c.timings.get(k, 0.0) for c in certs) for k in certs[0].timings}
        cert.message = f"max over {len(certs)} logits (worst: logit {worst}); " + cert.message
        if not cert.verified:
            bad = [k for k, c in enumerate(certs) if not c.verified]
            cert.message += f"; NOT verified for logit(s) {bad}"
        return cert

    def naive_bound(self) -> float:
        return max(p.naive_bound() for p in self._parts)

    def bound_from_value(self, rho):
        return float(rho)

    def build(self):
        raise FormulationError("MaxOverOutputs is solved as one SDP per output: use its parts()")

    def check(self, rec):
        raise FormulationError("MaxOverOutputs is checked per output: use its parts()")

    def dims(self):
        return self._parts[0].dims()
