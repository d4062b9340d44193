"""ℓ2 bounds for residual networks by the lifted LMI (LipSDP-NSR Theorem 4, math.md §7).

A network x^0 = W_in x, x^k = x^{k−1} + V_k φ_k(W_k x^{k−1}) (V_k = I when the block has no
second affine map), y = W_out x^m is written in *lifted* coordinates

    ξ = [x; w^1; …; w^m],   w^k = φ_k(v^k),   v^k = A_k ξ,   y = C ξ,

where every state is a linear map of ξ: X_0 = [W_in, 0, …], v^k = W_k X_{k−1} ξ,
X_k = X_{k−1} + V_k E_k (E_k selects w^k), C = W_out X_m.  For every QC Q_k of φ_k
(slope-restricted, GroupSort, Householder — the same generators as the feedforward form)

    M(ρ, θ) = Σ_k L_k^T Q_k(θ_k) L_k + C^T C − ρ E_x^T E_x ⪯ 0,   L_k = [A_k; E_k],

implies ‖y − y'‖ ≤ sqrt(ρ) ‖x − x'‖ (ξ^T M ξ ≤ 0 along trajectories, each QC term ≥ 0).
bound = sqrt(ρ).

**Decision: W_in and W_out are folded into the LMI** (not the product
‖W_in‖ · sqrt(ρ_mid) · ‖W_out‖ of math.md §7).  It is the same inequality for the whole map,
hence sound, and never looser: from a feasible (ρ_mid, θ) of the middle LMI, ‖W_out‖² θ with
ρ = ‖W_in‖² ‖W_out‖² ρ_mid is feasible here (derived).  Everything depends on x only through
W_in x, so the input block is reduced exactly to rank(W_in) via W_in = U S V^T → U S
(math.md §3).

**Keep S or P free.**  For residual nets S = P = 0 is lossy (math.md §7), so the default method
``"neuron"`` uses the full P-free NSR multipliers (λ ≥ 0, γ, τ free, S = 0 w.l.o.g.).

The walker below is generic: any sequence of Affine, Activation and Residual layers is lifted
this way (a feedforward net gives the usual block-tridiagonal LMI); :mod:`.rr` reuses it with
MaxMin rewritten as a residual ReLU.

**Normalisation (exact):** each top-level affine map is divided by its spectral norm s; all
QC families here are invariant under φ → φ(c·)/c and residual blocks commute with a global
scaling of the state, so the coordinates of activation block k scale by σ_k (product of the
s's before it) and θ_k = θ'_k σ_out² / σ_k², ρ = ρ' σ_out².  The check uses the original
weights.  Pauli et al., ICLR 2024 (arXiv 2401.14033), Theorem 4.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lipsdp.constraints import constraint_for

from ..assembly import LMI, LMIProblem, LMITerm
from ..check import CheckResult, _finish
from ..errors import FormulationError
from ..ir import Activation, Affine, Network, Residual
from .feedforward import Recovered, select_output

__all__ = ["Lifted", "lift_network", "lifted_problem", "lifted_matrix", "check_lifted", "ResidualL2",
           "naive_residual", "MARGIN"]

#: strictness margin on the hidden diagonal of the solver's (normalised) LMI: the solver's point
#: then has a negative definite hidden block, which the exact Schur-complement check needs.
MARGIN = 1e-8


@dataclass
class Lifted:
    """ξ = [x (n_in); w^1 (h_1); …]: pre-activation maps A_k (h_k × n_ξ), QCs, output map C."""

    n_in: int
    A: list
    qcs: list
    C: np.ndarray
    scales: list  # σ_k of activation block k (1 for the unnormalised lifting)
    out_scale: float

    @property
    def dims(self) -> list[int]:
        return [self.n_in] + [a.shape[0] for a in self.A]

    @property
    def size(self) -> int:
        return int(sum(self.dims))


def _expand(layer, X, qc_for, blocks):
    """Default activation expansion: one new coordinate block with pre-activation X."""
    qc = qc_for(layer)
    blocks.append((X, qc))
    return None  # caller sets X to the new block


def lift_network(layers, first_weight: np.ndarray, last_weight: np.ndarray, method: str, normalise: bool,
                 expand=None) -> Lifted:
    """Walk ``layers`` (Affine / Activation / Residual) and build the lifted maps.

    ``first_weight`` replaces the first affine's weight (input reduction), ``last_weight`` the
    last affine's (output selection).  ``expand(act, X, n_ξ) -> (list of (A, qc)), H, G`` may
    rewrite an activation into new blocks: output state = H X + G [new blocks] (used by the
    residual-ReLU baseline); default: one block per activation with φ's own QC.
    """
    blocks: list = []  # (pre-activation map as a function of current width, qc, scale)
    n_in = first_weight.shape[1]
    X = np.eye(n_in)  # state as a linear map of ξ (columns grow as blocks are added)
    width = n_in
    sigma = 1.0
    n_aff = sum(isinstance(lay, Affine) for lay in layers)
    k_aff = 0

    def grow(X, h):
        return np.hstack([X, np.zeros((X.shape[0], h))])

    def add_blocks(new, X):
        nonlocal width
        pieces = []
        for A, qc in new:
            h = A.shape[0]
            A = np.hstack([A, np.zeros((h, width - A.shape[1]))])
            blocks.append([A, qc, sigma])
            pieces.append((width, h))
            width += h
        return pieces

    for layer in layers:
        if isinstance(layer, Affine):
            W = layer.weight
            if k_aff == 0:
                W = first_weight
            if k_aff == n_aff - 1:
                W = last_weight
            k_aff += 1
            if normalise:
                s = float(np.linalg.norm(W, 2))
                if s > 0:
                    W = W / s
                    sigma *= s
            X = W @ X
        elif isinstance(layer, Activation):
            X = _activation(layer, X, method, expand, add_blocks, lambda h: None)
            width = X.shape[1]
        elif isinstance(layer, Residual):
            body = layer.body
            V = body[0].weight @ X
            Y = _activation(body[1], V, method, expand, add_blocks, None)
            if len(body) == 3:
                Y = body[2].weight @ Y
            Xg = np.hstack([X, np.zeros((X.shape[0], Y.shape[1] - X.shape[1]))])
            X = Xg + Y
            width = X.shape[1]
        else:  # pragma: no cover - Network validates
            raise FormulationError(f"cannot lift layer {type(layer).__name__}")
    n_xi = width
    A = [np.hstack([b[0], np.zeros((b[0].shape[0], n_xi - b[0].shape[1]))]) for b in blocks]
    C = np.hstack([X, np.zeros((X.shape[0], n_xi - X.shape[1]))])
    return Lifted(n_in, A, [b[1] for b in blocks], C, [b[2] for b in blocks], sigma)


def _activation(act, X, method, expand, add_blocks, _unused):
    """New state after activation ``act`` with pre-activation map X (rows = neurons)."""
    if expand is not None:
        new, H, G = expand(act, X, method)
    else:
        new, H, G = [(X, constraint_for(act, method))], None, None
    pieces = add_blocks(new, X)
    n_xi = pieces[-1][0] + pieces[-1][1]
    E = np.zeros((sum(h for _, h in pieces), n_xi))
    r = 0
    for start, h in pieces:
        E[r:r + h, start:start + h] = np.eye(h)
        r += h
    if G is None:
        return E
    Xg = np.hstack([X, np.zeros((X.shape[0], n_xi - X.shape[1]))])
    return H @ Xg + G @ E


# ---------------------------------------------------------------------------------------------
# LMI problem and check
# ---------------------------------------------------------------------------------------------


def lifted_problem(lift: Lifted, margin: float = MARGIN) -> LMIProblem:
    """minimise ρ s.t. Σ_k L_k^T Q_k L_k + C^T C − ρ E_x^T E_x (+ margin on the hidden block) ⪯ 0."""
    dims = lift.dims
    size = lift.size
    n_in = lift.n_in
    layout = {"rho": slice(0, 1)}
    pos = 1
    offs_all = []
    for k, qc in enumerate(lift.qcs, start=1):
        offs = {}
        for p in qc.params():
            layout[f"layer{k}.{p.name}"] = slice(pos, pos + p.size)
            offs[p.name] = pos
            pos += p.size
        offs_all.append(offs)
    nonneg = np.zeros(pos, dtype=bool)
    nonneg[0] = True
    for k, qc in enumerate(lift.qcs, start=1):
        for p in qc.params():
            nonneg[layout[f"layer{k}.{p.name}"]] = p.nonneg
    terms = [LMITerm(0, sp.csc_matrix((np.ones(n_in), (np.arange(n_in), np.arange(n_in))), shape=(size, n_in)),
                     -np.eye(n_in))]
    start = n_in
    for k, (A, qc) in enumerate(zip(lift.A, lift.qcs)):
        h = A.shape[0]
        for t in qc.terms():
            G = t.G.toarray()
            U = A.T @ G[:h]
            U[start:start + h] += G[h:]
            U[np.abs(U) < 1e-300] = 0.0
            terms.append(LMITerm(offs_all[k][t.param] + t.index, sp.csc_matrix(U), t.C))
        start += h
    F0 = lift.C.T @ lift.C
    F0[np.arange(n_in, size), np.arange(n_in, size)] += margin
    c = np.zeros(pos)
    c[0] = 1.0
    return LMIProblem(pos, c, nonneg, [LMI(size, sp.csr_matrix(F0), terms, dims)], layout)


def lifted_matrix(lift: Lifted, values):
    """(M without the −ρ term, |M| assembly bound, longest inner product) from the QC blocks."""
    size, n_in = lift.size, lift.n_in
    M = lift.C.T @ lift.C
    Mabs = np.abs(lift.C).T @ np.abs(lift.C)
    inner = max(lift.C.shape[0], size)
    start = n_in
    for A, qc, val in zip(lift.A, lift.qcs, values):
        h = A.shape[0]
        Q11, Q12, Q22 = qc.blocks(val)
        L = np.zeros((2 * h, size))
        L[:h] = A
        L[h:, start:start + h] = np.eye(h)
        Q = np.block([[Q11, Q12], [Q12.T, Q22]])
        M += L.T @ Q @ L
        aL = np.abs(L)
        Mabs += aL.T @ np.abs(Q) @ aL
        inner = max(inner, 2 * h)
        start += h
    return M, Mabs, inner


def check_lifted(lift: Lifted, values) -> CheckResult:
    """Independent float64 check on the ORIGINAL (unnormalised, unreduced) lifting."""
    t0 = time.perf_counter()
    M, Mabs, inner = lifted_matrix(lift, values)
    return _finish(M, Mabs, lift.n_in, None, inner, t0)


# ---------------------------------------------------------------------------------------------
# The residual formulation
# ---------------------------------------------------------------------------------------------


def naive_residual(network: Network, Wlast: np.ndarray) -> float:
    """‖W_in‖ Π_k (1 + Lip(body_k)) ‖W_out‖, with Lip(body) ≤ ‖W_b‖ Lip(φ) ‖W_a‖."""
    affines = [lay for lay in network.layers if isinstance(lay, Affine)]
    val = 1.0
    for layer in network.layers:
        if isinstance(layer, Affine):
            W = Wlast if layer is affines[-1] else layer.weight
            val *= float(np.linalg.norm(W, 2))
        elif isinstance(layer, Activation):
            val *= float(layer.lipschitz)
        else:
            b = layer.body
            lip = float(np.linalg.norm(b[0].weight, 2)) * float(b[1].lipschitz)
            if len(b) == 3:
                lip *= float(np.linalg.norm(b[2].weight, 2))
            val *= 1.0 + lip
    return val


class LiftedL2:
    """Base of the lifted ℓ2 formulations (residual, residual-ReLU): problem / recover / check."""

    norm = "l2"
    expand = None

    def __init__(self, network: Network, method: str = "neuron", output=None):
        self.network = network
        self.method = method
        self.output = output
        affines = network.affines
        W_first = affines[0].weight
        W_last = select_output(affines[-1].weight, output)
        if len(affines) == 1:
            W_first = W_last
        self.W_last = W_last
        self.zero = any(not np.any(a.weight) for a in affines) or not np.any(W_last)
        # original lifting (for the check) and the normalised, input-reduced one (for the solver)
        self.orig = lift_network(network.layers, W_first, W_last, method, False, self.expand)
        Wr = W_first
        if len(affines) > 1 and W_first.shape[0] < W_first.shape[1]:
            U, S, _ = np.linalg.svd(W_first, full_matrices=False)
            Wr = U * S
        self.lift = lift_network(network.layers, Wr, W_last, method, True, self.expand)
        self.qcs = self.orig.qcs

    def naive_bound(self) -> float:
        return naive_residual(self.network, self.W_last)

    def trivial(self):
        return 0.0 if self.zero else None

    def problem(self) -> LMIProblem:
        return lifted_problem(self.lift)

    def recover(self, problem: LMIProblem, theta: np.ndarray) -> Recovered:
        vals = problem.unpack(theta)
        out = self.lift.out_scale
        layers = []
        for k, (qc, sig) in enumerate(zip(self.lift.qcs, self.lift.scales), start=1):
            raw = {p.name: vals[f"layer{k}.{p.name}"] for p in qc.params()}
            layers.append(qc.scaled(qc.project(raw), out ** 2 / sig ** 2))
        return Recovered(layers, float(vals["rho"][0]) * out ** 2)

    def check(self, rec: Recovered) -> CheckResult:
        return check_lifted(self.orig, rec.layers)

    def bound_from_rho(self, rho: float) -> float:
        return float(np.nextafter(np.sqrt(rho), np.inf))


class ResidualL2(LiftedL2):
    """ℓ2 LipSDP-NSR for residual networks, lifted LMI with W_in / W_out folded in (module doc)."""


def residual_from_weights(mats, activation="maxmin", name: str = "") -> Network:
    """The residual net of refdata ``resweights_*``: x^0 = W_1 x, x^k = x^{k−1} + φ(W_k x^{k−1}),
    y = W_L x^{m} (QCs_MaxMin ``main_Res.m`` structure).  ``activation``: "maxmin", a slope
    function name ("relu", …) or an :class:`lipsdp.ir.Activation`."""
    from ..ir import GroupSort, SlopeRestricted

    mats = [np.asarray(W, dtype=float) for W in mats]
    if len(mats) < 3:
        raise FormulationError(f"a residual net needs W_in, at least one block and W_out: got {len(mats)} matrices")
    if isinstance(activation, Activation):
        act = activation
    elif activation == "maxmin":
        act = GroupSort(2)
    else:
        act = SlopeRestricted(activation)
    layers = [Affine(mats[0], name="in")]
    for k, W in enumerate(mats[1:-1], start=1):
        if W.shape[0] != W.shape[1]:
            raise FormulationError(f"residual block {k}: weight must be square (skip connection), got {W.shape}")
        layers.append(Residual((Affine(W), act), name=f"block{k}"))
    layers.append(Affine(mats[-1], name="out"))
    return Network(layers, name)
