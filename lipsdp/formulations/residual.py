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

from ..assembly import LMI, LMIProblem, LMITerm, Layout
from ..check import CheckResult, assemble, prove_rho
from ..errors import FormulationError
from ..ir import Activation, Affine, Network, Residual
from ..reductions import InputReduction, Margin, Scale
from .base import Formulation, Recovered, select_output

__all__ = ["Lifted", "lift_network", "lifted_problem", "lifted_blocks", "check_lifted", "ResidualL2",
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


def _refuse_dense_lifting_beyond_memory(network: Network, n_in: int) -> None:
    """The lifting is dense (rows: hidden neurons; columns: input + hidden): refuse with a clear
    error, before allocating, when two liftings (original and normalised) cannot fit in memory."""
    from lipsdp.errors import MemoryLimitError
    from lipsdp.memory import default_memory_limit

    hidden = sum(lay.size if isinstance(lay, Activation) else lay.body[1].size
                 for lay in network.layers if isinstance(lay, (Activation, Residual)))
    need = 8.0 * 3 * hidden * (n_in + hidden)
    limit = default_memory_limit()
    if limit is not None and need > limit:
        raise MemoryLimitError(
            f"the residual formulation lifts the network into dense matrices: about {need / 2**30:.1f} GiB for "
            f"{hidden} hidden neurons, more than the limit {limit / 2**30:.1f} GiB (80% of the available memory); "
            "residual networks of this size (residual CNNs) are not supported yet — the lifting does not keep "
            "convolutions structured; certify a smaller residual network or the feedforward parts")


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
    layout = Layout([("rho", 1, True)], lift.qcs)
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
            terms.append(LMITerm(layout.offsets[k][t.param] + t.index, sp.csc_matrix(U), t.C))
        start += h
    F0 = lift.C.T @ lift.C
    F0[np.arange(n_in, size), np.arange(n_in, size)] += margin
    return LMIProblem(layout.n_vars, layout.objective(), layout.nonneg, [LMI(size, sp.csr_matrix(F0), terms, dims)],
                      layout.slices)


def lifted_blocks(lift: Lifted, values):
    """The blocks (i, j, X, |X|) of M = C^T C + Σ_k L_k^T Q_k L_k, L_k = [A_k; E_k], on the
    coordinate blocks (x, w^1, …, w^m), from the QCs' paper formula."""
    dims = lift.dims
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    nb = len(dims)
    C, aC = lift.C, np.abs(lift.C)
    for a in range(nb):
        for b in range(nb):
            Ca, Cb = C[:, off[a]:off[a + 1]], C[:, off[b]:off[b + 1]]
            if np.any(Ca) and np.any(Cb):
                yield a, b, Ca.T @ Cb, aC[:, off[a]:off[a + 1]].T @ aC[:, off[b]:off[b + 1]]
    for k, (A, qc, val) in enumerate(zip(lift.A, lift.qcs, values), start=1):
        h = A.shape[0]
        Q11, Q12, Q22 = qc.blocks(val)
        Q = np.block([[Q11, Q12], [Q12.T, Q22]])
        aQ = np.abs(Q)
        Ls = []
        for a in range(nb):
            L = np.zeros((2 * h, dims[a]))
            L[:h] = A[:, off[a]:off[a + 1]]
            if a == k:
                L[h:] = np.eye(h)
            Ls.append(L if np.any(L) else None)
        for a in range(nb):
            for b in range(nb):
                if Ls[a] is not None and Ls[b] is not None:
                    yield a, b, Ls[a].T @ Q @ Ls[b], np.abs(Ls[a]).T @ aQ @ np.abs(Ls[b])


def check_lifted(lift: Lifted, values) -> CheckResult:
    """Independent float64 check on the ORIGINAL (unnormalised, unreduced) lifting."""
    t0 = time.perf_counter()
    M, Mabs = assemble(lift.dims, lifted_blocks(lift, values))
    inner = max([lift.C.shape[0], lift.size] + [2 * A.shape[0] for A in lift.A])
    return prove_rho(M, Mabs, np.arange(lift.n_in), 1.0, inner, None, t0)


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


class LiftedL2(Formulation):
    """Base of the lifted ℓ2 formulations (residual, residual-ReLU): the LMI of the original
    lifting, normalised and input-reduced by rewrites (module docstring)."""

    norm = "l2"
    expand = None

    def __init__(self, network: Network, method: str = "neuron", output=None):
        super().__init__(network, method, output)
        self.network = network
        affines = network.affines
        W_first = affines[0].weight
        W_last = select_output(affines[-1].weight, output)
        if len(affines) == 1:
            W_first = W_last
        self.W_last = W_last
        self.zero = any(not np.any(a.weight) for a in affines) or not np.any(W_last)
        _refuse_dense_lifting_beyond_memory(network, W_first.shape[1])
        # the original lifting (built, checked); the normalised one only gives the scales σ_k
        self.orig = lift_network(network.layers, W_first, W_last, method, False, self.expand)
        scaled = lift_network(network.layers, W_first, W_last, method, True, self.expand)
        self.scales, self.out_scale = scaled.scales, scaled.out_scale
        self.qcs = self.orig.qcs
        self._V = None
        if len(affines) > 1 and W_first.shape[0] < W_first.shape[1]:
            _, _, Vt = np.linalg.svd(W_first, full_matrices=False)
            self._V = Vt.T

    def naive_bound(self) -> float:
        return naive_residual(self.network, self.W_last)

    def trivial(self):
        return 0.0 if self.zero else None

    def dims(self):
        return [int(d) for d in self.orig.dims]

    @property
    def check_order(self) -> int:
        return int(self.orig.size)

    def build(self) -> LMIProblem:
        p = lifted_problem(self.orig, margin=0.0)
        self._layout = p.layout
        return p

    def reductions(self) -> list:
        out = self.out_scale
        dims = self.orig.dims
        d = np.concatenate([np.full(dims[0], 1.0 / out)] +
                           [np.full(h, sig / out) for h, sig in zip(dims[1:], self.scales)])
        kappa = np.empty(max(sl.stop for sl in self._layout.values()))
        kappa[self._layout["rho"]] = 1.0 / out ** 2
        for k, (qc, sig) in enumerate(zip(self.qcs, self.scales), start=1):
            for p in qc.params():
                kappa[self._layout[f"layer{k}.{p.name}"]] = (sig / out) ** 2
        steps = [Scale([d], kappa)]
        n_in = dims[0]
        if self._V is not None:
            steps.append(InputReduction(self._V))
            n_in = self._V.shape[1]
        size = n_in + sum(dims[1:])
        return steps + [Margin(MARGIN, [np.arange(n_in, size)])]

    def check(self, rec: Recovered) -> CheckResult:
        return check_lifted(self.orig, rec.layers)


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
