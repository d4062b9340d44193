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

**Normalisation (derived).**  W_k = s_k W'_k, σ_k = Π_{j<k} s_j, x^k = σ_k x'^k, t = t'.  Every
QC is homogeneous of degree 2 and linear in θ, and w Δx^l = σ_{l+1} w' Δx'^l, so
M(ρ, τ, θ) in the original coordinates equals σ_{l+1} · M'(ρ', τ', θ') with

    ρ = σ_{l+1} ρ',   τ = σ_{l+1} τ',   θ_k = σ_{l+1} θ'_k / σ_k².

The check always rebuilds M on the ORIGINAL weights.

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
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from lipsdp.constraints import constraint_for

from ..assembly import LMI, LMIProblem, LMITerm, lift_terms
from ..check import CheckResult, _STEPS, on_subspace, psd_proof
from ..errors import FormulationError
from ..ir import Network
from .feedforward import select_output

__all__ = ["FeedforwardLinf", "RecoveredLinf", "check_linf", "naive_linf", "activation_lip_inf",
           "certify_all_outputs"]

#: strictness margin added to the non-border diagonal of F0 in the solver's (normalised)
#: problem, so that the solver's point has a strictly negative definite H and the exact
#: Schur-complement check has room.  Costs ≈ MARGIN · (n_0 + N) / 2 in ρ' (negligible).
MARGIN = 1e-6


def activation_lip_inf(act) -> float:
    """ℓ∞ → ℓ∞ Lipschitz constant of one activation layer (used by the naive bound)."""
    kind = getattr(act, "kind", "")
    if kind == "groupsort":
        return 1.0  # sorting is non-expansive in every ℓp
    if kind == "slope":
        return float(np.max(np.maximum(np.abs(act.alpha), np.abs(act.beta))))
    if kind == "householder":
        # continuous piecewise linear: Lipschitz constant = max over pieces {I, I − 2vv^T}
        worst = 1.0
        for v in act.vectors:
            R = np.eye(v.size) - 2 * np.outer(v, v)
            worst = max(worst, float(np.max(np.abs(R).sum(axis=1))))
        return worst
    return float(getattr(act, "lipschitz", 1.0)) * math.sqrt(getattr(act, "size", 1) or 1)


def naive_linf(Ws, activations=()) -> float:
    """Π_{k<l} ‖W_k‖_{∞→∞} · Lip_∞(φ_k) · ‖w‖_1 with w = the (scalar-output) last row."""
    val = float(np.prod([np.max(np.abs(W).sum(axis=1)) for W in Ws[:-1]])) if len(Ws) > 1 else 1.0
    val *= float(np.prod([activation_lip_inf(a) for a in activations])) if activations else 1.0
    return val * float(np.abs(Ws[-1]).sum())


@dataclass
class RecoveredLinf:
    """Multipliers in original coordinates: per-layer QC dicts, the input τ, the solver's ρ."""

    layers: list[dict]
    rho_solver: float
    tau: np.ndarray | None = None


class FeedforwardLinf:
    """ℓ∞ bound of a scalar output c^T f of a feedforward network (see the module docstring)."""

    norm = "linf"

    def __init__(self, network: Network, method: str = "neuron", output=None):
        if not network.is_feedforward:
            raise FormulationError("FeedforwardLinf needs a feedforward network (no residual blocks)")
        if output is None:
            if network.output_dim != 1:
                raise FormulationError(
                    f"norm='linf' bounds one scalar output but the network has {network.output_dim} outputs; "
                    "pass output=k (a logit) or output=c (a vector), or call lipsdp.certify(..., norm='linf') "
                    "without output to get every logit's bound and their maximum"
                )
            output = 0
        self.network = network
        self.method = method
        self.output = output
        Ws = [np.array(W) for W in network.weights]
        Ws[-1] = select_output(Ws[-1], output)
        self.Ws = Ws
        self.qcs = [constraint_for(a, method) for a in network.activations]
        s = np.array([np.linalg.norm(W, 2) for W in Ws])
        self.zero = bool(np.any(s == 0))
        s[s == 0] = 1.0
        self.s = s
        self.sigma = np.concatenate([[1.0], np.cumprod(s)])  # σ_0 .. σ_{l+1}
        self.Wn = [W / sk for W, sk in zip(Ws, s)]

    # ------------------------------------------------------------------------------------
    def naive_bound(self) -> float:
        return naive_linf(self.Ws, self.network.activations)

    def trivial(self) -> float | None:
        if self.zero:
            return 0.0
        return None

    def _dims(self):
        return [W.shape[1] for W in self.Wn]  # n_0 .. n_l

    def problem(self) -> LMIProblem:
        Wn, qcs = self.Wn, self.qcs
        dims = self._dims()
        off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
        t = int(off[-1])
        size = t + 1
        n0 = dims[0]
        layout = {"rho": slice(0, 1), "tau": slice(1, 1 + n0)}
        pos = 1 + n0
        var_offsets = []
        for k, qc in enumerate(qcs, start=1):
            offs = {}
            for p in qc.params():
                layout[f"layer{k}.{p.name}"] = slice(pos, pos + p.size)
                offs[p.name] = pos
                pos += p.size
            var_offsets.append(offs)
        nonneg = np.zeros(pos, dtype=bool)
        nonneg[: 1 + n0] = True
        for k, qc in enumerate(qcs, start=1):
            for p in qc.params():
                nonneg[layout[f"layer{k}.{p.name}"]] = p.nonneg
        terms = [LMITerm(0, sp.csc_matrix(([1.0], ([t], [0])), shape=(size, 1)), np.array([[-2.0]]))]
        Ctau = np.diag([-1.0, 1.0])
        for i in range(n0):
            U = sp.csc_matrix(([1.0, 1.0], ([i, t], [0, 1])), shape=(size, 2))
            terms.append(LMITerm(1 + i, U, Ctau))
        for k, qc in enumerate(qcs, start=1):
            terms += lift_terms(qc, Wn[k - 1], off[k - 1], off[k], size, var_offsets[k - 1])
        w = Wn[-1].ravel()
        F0 = sp.lil_matrix((size, size))
        F0[off[-2]:off[-1], t] = -w[:, None]
        F0[t, off[-2]:off[-1]] = -w[None, :]
        F0 = F0.tocsr() + sp.diags(np.r_[np.full(t, MARGIN), 0.0])
        c = np.zeros(pos)
        c[0] = 1.0
        return LMIProblem(pos, c, nonneg, [LMI(size, F0.tocsr(), terms, dims + [1])], layout)

    def recover(self, problem: LMIProblem, theta: np.ndarray) -> RecoveredLinf:
        vals = problem.unpack(theta)
        sig = self.sigma
        l = len(self.qcs)
        out = sig[l + 1]
        layers = []
        for k, qc in enumerate(self.qcs, start=1):
            raw = {p.name: vals[f"layer{k}.{p.name}"] for p in qc.params()}
            layers.append(qc.scaled(qc.project(raw), out / sig[k] ** 2))
        tau = np.maximum(vals["tau"], 0.0) * out
        return RecoveredLinf(layers, float(vals["rho"][0]) * out, tau)

    def check(self, rec) -> CheckResult:
        tau = getattr(rec, "tau", None)
        return check_linf(self.Ws, self.qcs, rec.layers, tau)

    def bound_from_value(self, rho: float) -> float:
        return float(rho)

    def bound_from_rho(self, rho: float) -> float:
        return float(np.nextafter(rho, np.inf))


def check_linf(Ws, qcs, values, tau) -> CheckResult:
    """Independent float64 check of an ℓ∞ certificate (module docstring), original weights.

    Ws: W_0..W_l with the last one the scalar-output row w (1 × n_l); qcs, values: one QC and
    one multiplier dict per hidden layer; tau: the input multipliers (≥ 0 after projection).
    Returns the checked ρ' (bound = ρ').
    """
    t0 = time.perf_counter()
    w = np.asarray(Ws[-1], dtype=float).ravel()
    l = len(qcs)
    if l == 0:  # f = w^T x: the ℓ∞ constant is exactly ‖w‖_1 (fsum is correctly rounded)
        r = float(np.nextafter(math.fsum(np.abs(w)), np.inf))
        return CheckResult(True, r, r, 0.0, "exact: a linear scalar map has ℓ∞ constant ‖w‖_1",
                           time.perf_counter() - t0)
    dims = [W.shape[1] for W in Ws]  # n_0 .. n_l
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    t = int(off[-1])
    n = t + 1
    n0 = dims[0]
    tau = np.maximum(np.asarray(tau, dtype=float).ravel(), 0.0)
    if tau.shape[0] != n0:
        raise FormulationError(f"check_linf: expected {n0} input multipliers tau, got {tau.shape[0]}")
    M = np.zeros((n, n))
    Mabs = np.zeros((n, n))
    inner = max(max(W.shape) for W in Ws) + n0
    for k in range(1, l + 1):
        W = Ws[k - 1]
        Q11, Q12, Q22 = qcs[k - 1].blocks(values[k - 1])
        i, j = slice(off[k - 1], off[k]), slice(off[k], off[k + 1])
        M[i, i] += W.T @ Q11 @ W
        M[i, j] += W.T @ Q12
        M[j, i] += Q12.T @ W
        M[j, j] += Q22
        aW, a11, a12 = np.abs(W), np.abs(Q11), np.abs(Q12)
        Mabs[i, i] += aW.T @ a11 @ aW
        Mabs[i, j] += aW.T @ a12
        Mabs[j, i] += a12.T @ aW
        Mabs[j, j] += np.abs(Q22)
    idx = np.arange(n0)
    M[idx, idx] -= tau
    Mabs[idx, idx] += tau
    last = slice(off[l], off[l + 1])
    M[last, t] = -w
    M[t, last] = -w
    Mabs[last, t] = np.abs(w)
    Mabs[t, last] = np.abs(w)
    s = math.fsum(tau)
    M[t, t] = s
    Mabs[t, t] = s
    extra = None
    frees = [qc.free_basis() for qc in qcs]
    if any(B is not None for B in frees):  # on the preserved subspace (lipsdp.check.on_subspace)
        # ρ enters only the border (last) coordinate, with weight 2
        M, Mabs, inner, extra = on_subspace(M, Mabs, inner, Ws, frees, (np.array([-1]), 2.0), border=1)
        t = M.shape[0] - 1
    H = M[:t, :t]
    try:
        L = sla.cholesky(-H, lower=True, check_finite=True)
    except (np.linalg.LinAlgError, sla.LinAlgError, ValueError):
        return CheckResult(False, float("inf"), float("inf"), float("nan"),
                           "the LMI without its border row is not negative definite for the solver's multipliers "
                           "(τ > 0 and a strictly feasible hidden block are needed)", time.perf_counter() - t0)
    y = sla.solve_triangular(L, M[:t, t], lower=True, check_finite=False)
    rho_min = max(0.5 * (M[t, t] + float(y @ y)), 0.0)
    scale = rho_min if rho_min > 0 else max(float(np.max(np.abs(np.diag(M)))), np.finfo(float).tiny)
    delta = float("nan")
    for step in _STEPS:
        rho = rho_min + step * scale
        A = -M
        A[t, t] += 2.0 * rho
        Aabs = Mabs.copy()
        Aabs[t, t] += 2.0 * rho
        ok, delta = psd_proof(A, Aabs, inner, None if extra is None else (lambda d, r=rho: extra(r, d)))
        if ok:
            return CheckResult(True, float(rho), rho_min, delta,
                               f"Cholesky with margin passed at rho = rho_min·(1 + {step:g})",
                               time.perf_counter() - t0)
    return CheckResult(False, float(rho_min), rho_min, delta,
                       "the rounding-error-safe Cholesky test failed even with rho inflated by 1%",
                       time.perf_counter() - t0)


def certify_all_outputs(certify_one, model, output_dim: int, **kwargs):
    """ℓ∞ without ``output``: certify every logit k, return the max as the bound.

    ``max_k sup |f_k(x) − f_k(x')| / ‖x − x'‖_∞`` is the ℓ∞ → ℓ∞ Lipschitz constant, so the
    maximum of the per-logit certificates bounds it.  The returned certificate carries
    ``per_output`` (one checked bound per logit) and is verified only if every logit is.
    """
    certs = [certify_one(model, output=k, **kwargs) for k in range(output_dim)]
    worst = max(range(output_dim), key=lambda k: certs[k].bound)
    cert = certs[worst]
    cert.per_output = [float(c.bound) for c in certs]
    cert.verified = all(c.verified for c in certs)
    cert.naive_bound = max(float(c.naive_bound) for c in certs)
    lbs = [c.lower_bound for c in certs if c.lower_bound is not None]
    cert.lower_bound = max(lbs) if lbs else None
    cert.output = None
    cert.timings = {k: sum(c.timings.get(k, 0.0) for c in certs) for k in certs[0].timings}
    cert.message = f"max over {output_dim} logits (worst: logit {worst}); " + cert.message
    if not cert.verified:
        bad = [k for k, c in enumerate(certs) if not c.verified]
        cert.message += f"; NOT verified for logit(s) {bad}"
    return cert
