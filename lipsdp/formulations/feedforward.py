"""Feedforward networks, ℓ2: LipSDP-Neuron / -Layer and LipSDP-NSR (math.md §2, §4, Theorem 1).

    M(ρ, θ) = Σ_k L_k^T Q_k(θ_k) L_k + blkdiag(−ρ I, 0, …, 0, W_l^T W_l) ⪯ 0,
    L_k = [W_{k−1} E_{k−1}; E_k],   bound = sqrt(ρ),

on the coordinate blocks (Δx^0, …, Δx^l); Q_k is the QC of activation layer k
(:mod:`lipsdp.constraints`).  Along any two trajectories every L_k^T Q_k L_k term is ≥ 0, so
ξ^T M ξ ≤ 0 gives ‖Δf‖² ≤ ρ ‖Δx‖².

Rewrites before solving (:mod:`lipsdp.reductions`, all exact):

* **normalisation** — each W_k is divided by s_k ≈ ‖W_k‖_2.  With σ_k = Π_{j<k} s_j the
  coordinates of block k scale by σ_k/σ_{l+1} (a diagonal congruence) and the multipliers as
  θ'_k = θ_k σ_k²/σ_{l+1}², ρ' = ρ/σ_{l+1}² — exact for every QC family here, which are invariant
  under φ → φ(c·)/c;
* **input reduction** (dense W_0 with fewer rows than columns) — ρI − W_0^T X W_0 ⪰ 0 ⇔
  ρI − V^T W_0^T X W_0 V ⪰ 0 with V the right singular vectors of W_0 (math.md §3);
* **preserved subspace** for GroupSort / Householder layers (:mod:`.reduced`).

The :class:`FeedforwardFamily` base is shared with the ℓ∞ formulation (:mod:`.linf`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lipsdp.constraints import constraint_for

from ..assembly import LMI, LMIProblem, LMITerm, Layout, lift_terms
from ..check import CheckResult, check_feedforward
from ..errors import FormulationError
from ..ir import Network
from ..linop import Dense
from ..reductions import InputReduction, Margin, Scale, Subspace
from .base import Formulation, Recovered, matrix_of, select_output
from .reduced import HIDDEN_MARGIN, subspace_reduction

#: the warm start's multipliers are ECLipsE-Fast's times this (a centred, strictly feasible point)
START_SCALE = 2.0
#: the warm start densifies each layer map: only while every one has at most this many entries
#: (a 3136 × 1568 convolution of the MNIST 2C2F net has 4.9e6)
START_MAX_ENTRIES = 2e7

__all__ = ["FeedforwardFamily", "FeedforwardL2", "Recovered", "select_output", "naive_l2", "START_SCALE"]


def naive_l2(Ws, activations=(), norms=None) -> float:
    """Product of spectral norms, times each activation's own Lipschitz constant (1 for ReLU);
    ``norms``: the layers' spectral norms when already computed."""
    if norms is None:
        norms = [W.norm2_estimate() if hasattr(W, "norm2_estimate") else np.linalg.norm(W, 2) for W in Ws]
    return float(np.prod(norms) * np.prod([a.lipschitz for a in activations]))


class FeedforwardFamily(Formulation):
    """What the feedforward ℓ2 and ℓ∞ formulations share: the layers as operators, the QCs, the
    normalisation scales and the QC blocks of the LMI.  Subclasses add the input/output rows."""

    #: margin added on the hidden diagonal after the subspace reduction
    hidden_margin = HIDDEN_MARGIN

    def __init__(self, network: Network, method: str = "neuron", output=None):
        if not isinstance(network, Network) or not network.is_feedforward:
            raise FormulationError(f"{type(self).__name__} needs a feedforward lipsdp Network (no residual blocks)")
        super().__init__(network, method, output)
        self.network = network
        ops = list(network.ops)
        ops[-1] = select_output(ops[-1], output)
        self.ops = ops
        self.qcs = [constraint_for(a, method) for a in network.activations]
        self.norms = np.array([op.norm2_estimate() for op in ops])  # ‖W_k‖₂ (sparse ops: an iterative solve)
        s = self.norms.copy()
        self.zero = bool(np.any(s == 0))
        s[s == 0] = 1.0
        self.s = s
        self.sigma = np.concatenate([[1.0], np.cumprod(s)])  # σ_0 .. σ_{l+1}
        self.frees = [qc.free_basis() for qc in self.qcs]

    @property
    def Ws(self) -> list:
        """The layer maps as the check uses them (dense arrays; scipy sparse for structured ops)."""
        if not hasattr(self, "_Ws"):
            self._Ws = [matrix_of(op) for op in self.ops]
        return self._Ws

    def dims(self) -> list[int]:
        return [int(op.shape[1]) for op in self.ops]  # n_0 .. n_l

    @property
    def check_order(self) -> int:
        return int(sum(self.dims()))

    def trivial(self):
        return 0.0 if self.zero else None

    def _qc_terms(self, layout: Layout, off, size) -> list:
        terms = []
        for k, qc in enumerate(self.qcs, start=1):
            terms += lift_terms(qc, self.ops[k - 1], off[k - 1], off[k], size, layout.offsets[k - 1])
        return terms

    def _normalised_dense(self) -> list[np.ndarray]:
        """W_k / s_k as dense arrays, the first one input-reduced as the solver's problem is."""
        Wn = [op.to_dense() / sk for op, sk in zip(self.ops, self.s)]
        V = self._input_basis()
        if V is not None:
            Wn[0] = Wn[0] @ V
        return Wn

    def _input_basis(self):
        return None

    def _subspace_steps(self, border: int) -> list:
        if all(B is None for B in self.frees):
            return []
        Wn = self._normalised_dense()
        step = subspace_reduction(Wn, self.qcs, self.frees, self._layout, border)
        hidden = np.arange(step.blocks[0], step.blocks[0] + sum(step.blocks[1: len(self.qcs) + 1]))
        return [step, Margin(self.hidden_margin, [hidden])]


class FeedforwardL2(FeedforwardFamily):
    """ℓ2 LipSDP / LipSDP-NSR for feedforward networks (see the module docstring)."""

    norm = "l2"

    def naive_bound(self) -> float:
        return naive_l2(self.ops, self.network.activations, self.norms)

    def build(self) -> LMIProblem:
        dims = self.dims()
        off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
        size = int(off[-1])
        layout = Layout([("rho", 1, True)], self.qcs)
        self._layout = layout.slices
        n0 = dims[0]
        terms = [LMITerm(0, sp.csc_matrix((np.ones(n0), (np.arange(n0), np.arange(n0))), shape=(size, n0)), -np.eye(n0))]
        terms += self._qc_terms(layout, off, size)
        Wl = self.ops[-1].to_sparse()
        F0 = sp.lil_matrix((size, size))
        F0[off[-2]:off[-1], off[-2]:off[-1]] = (Wl.T @ Wl).toarray()
        return LMIProblem(layout.n_vars, layout.objective(), layout.nonneg, [LMI(size, F0.tocsr(), terms, dims)],
                          layout.slices)

    def _input_basis(self):
        """V (n_0 × n_1): the right singular vectors of a dense W_0 with fewer rows than columns."""
        if len(self.ops) < 2 or not isinstance(self.ops[0], Dense) or self.ops[0].shape[0] >= self.ops[0].shape[1]:
            return None
        if not hasattr(self, "_V"):
            _, _, Vt = np.linalg.svd(self.ops[0].to_dense() / self.s[0], full_matrices=False)
            self._V = Vt.T
        return self._V

    def reductions(self) -> list:
        sig, dims = self.sigma, self.dims()
        l = len(self.qcs)
        d = np.concatenate([np.full(n, sig[k] / sig[l + 1]) for k, n in enumerate(dims)])
        kappa = np.empty(self._layout_size())
        kappa[self._layout["rho"]] = 1.0 / sig[l + 1] ** 2
        for k, qc in enumerate(self.qcs, start=1):
            for p in qc.params():
                kappa[self._layout[f"layer{k}.{p.name}"]] = (sig[k] / sig[l + 1]) ** 2
        steps = [Scale([d], kappa)]
        V = self._input_basis()
        if V is not None:
            steps.append(InputReduction(V))
        sub = self._subspace_steps(border=0)
        if not sub and self.qcs:  # slack in every hidden direction for the rounding-safe check
            n0 = dims[0] if V is None else V.shape[1]
            sub = [Margin(self.hidden_margin, [np.arange(n0, n0 + sum(dims[1:]))])]
        return steps + sub

    def _layout_size(self) -> int:
        return max(sl.stop for sl in self._layout.values())

    def start(self, problem) -> np.ndarray | None:
        """ECLipsE-Fast's layer-wise multipliers as a strictly feasible warm start, or None.

        Xu & Sivaranjani, "ECLipsE: Efficient Compositional Lipschitz Constant Estimation for Deep
        Neural Networks" (NeurIPS 2024): eliminate the blocks of −M in order with one multiplier
        t_k per layer.  X_0 = I (ρ = 1), A_k = D_k W_{k−1} X_{k−1}^{-1} W_{k−1}^T D_k
        (D_k = diag(α + β)), t_k = 1/λ_max(A_k) (maximises λ_min(2t I − t² A_k)),
        X_k = 2 t_k I − t_k² A_k ≻ 0; finally c = λ_max(W_l X_l^{-1} W_l^T) and (ρ, λ_k) = f c (1, t_k):
        f = 1 + ε gives ECLipsE-Fast's bound; f = START_SCALE = 2 centres the point for the
        interior-point method.  Slope-restricted layers with αβ ≥ 0 only (the dropped 2αβ W^T T W
        blocks are then PSD, so the point stays feasible); None otherwise.  In the coordinates of
        the normalised, input-reduced problem (the one solved).
        """
        if not self.qcs or any(getattr(a, "kind", "") != "slope" for a in self.network.activations):
            return None
        if any(isinstance(s, Subspace) for s in problem.rewrites) or \
                max(op.shape[0] * op.shape[1] for op in self.ops) > START_MAX_ENTRIES:
            return None
        Wn = self._normalised_dense()
        X = np.eye(Wn[0].shape[1])
        ts = []
        for k, (W, a) in enumerate(zip(Wn[:-1], self.network.activations), start=1):
            al, be = np.broadcast_to(a.alpha, (W.shape[0],)), np.broadcast_to(a.beta, (W.shape[0],))
            if np.any(al * be < 0):
                return None
            DW = (al + be)[:, None] * W
            A = DW @ np.linalg.solve(X, DW.T)
            amax = float(np.linalg.eigvalsh(0.5 * (A + A.T))[-1])
            if not np.isfinite(amax) or amax <= 0:
                return None
            t = 1.0 / amax
            X = 2 * t * np.eye(W.shape[0]) - t * t * A
            ts.append(t)
        Wl = Wn[-1]
        c = float(np.linalg.eigvalsh(Wl @ np.linalg.solve(X, Wl.T))[-1]) * START_SCALE
        if not np.isfinite(c) or c <= 0:
            return None
        th = np.zeros(problem.n_vars)
        th[problem.layout["rho"]] = c
        for k, t in enumerate(ts, start=1):
            th[problem.layout[f"layer{k}.lambda"]] = c * t
        return th

    def check(self, rec: Recovered) -> CheckResult:
        return check_feedforward(self.Ws, self.qcs, rec.layers)
