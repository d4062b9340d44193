"""GroupSort / MaxMin and Householder activations: the LipSDP-NSR quadratic constraints.

Pauli, Havens, Araujo, Garg, Khorrami, Allgöwer, Hu, "Novel Quadratic Constraints for Extending
LipSDP beyond Slope-Restricted Activations", ICLR 2024 (arXiv 2401.14033), Lemmas 1 and 2.
For G groups with matrices Π_i (GroupSort: Π_i = 1 1^T; Householder: Π_i = I − v_i v_i^T),
λ ∈ R^G_{≥0} and free γ, τ ∈ R^G::

    T = blkdiag(λ_i I + γ_i Π_i),   P = blkdiag(τ_i Π_i),   S = 0
    [Δv; Δφ]^T [[T − 2S, P + S], [P + S, −T − 2P]] [Δv; Δφ] ≥ 0.

S = 0 loses nothing: the QC matrix is unchanged along (γ, ν, τ) → (γ + 2t, ν + t, τ − t)
(math.md §4), and fixing it removes an unbounded direction that makes interior-point solvers fail.

* ``neuron``: the full multiplier set above (λ, γ, τ per group) — default, tightest.
* ``channel``: same as ``neuron`` (per group already).
* ``chain`` (alias ``layer``): S = P = 0 (τ dropped), what the authors' code solves for Table 1;
  for feedforward nets the LMI then decouples into a chain of layer-wise LMIs.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from .base import Param, QuadraticConstraint, Term

__all__ = ["GroupSortQC", "HouseholderQC"]


class _GroupQC(QuadraticConstraint):
    VARIANTS = {
        "neuron": "λ ≥ 0, γ and τ free per group (full LipSDP-NSR, S = 0 w.l.o.g.)",
        "channel": "same as neuron (the multipliers are per group already)",
        "chain": "λ ≥ 0, γ free per group, S = P = 0 (the paper's Table 1 form)",
        "layer": "same as chain",
    }

    def __init__(self, activation, variant=None):
        super().__init__(activation, variant)
        self.g = activation.group_size
        self.G = activation.n_groups

    def pi_factor(self, i: int) -> np.ndarray:
        """F_i with Π_i = F_i F_i^T (g × rank)."""
        raise NotImplementedError

    @property
    def has_p(self) -> bool:
        return self.variant in ("neuron", "channel")

    @property
    def penalty(self):
        # (γ, τ) = (−t, t) turns γ(Δv^TΠΔv − Δφ^TΠΔφ) + τ(2Δv^TΠΔφ − 2Δφ^TΠΔφ) into −t(Δv − Δφ)^T Π (Δv − Δφ)
        return {"gamma": -1.0, "tau": 1.0} if self.has_p else {}

    def free_basis(self):
        """Block-diagonal B with one block per group (see the subclasses); None for the chain
        variant, which keeps no τ (no exact penalty, nothing to eliminate)."""
        if not self.has_p:
            return None
        return sla.block_diag(*[self.free_block(i) for i in range(self.G)])

    def free_block(self, i: int) -> np.ndarray:
        raise NotImplementedError

    metric_params = ("lambda", "gamma")

    def metric(self, values):
        """T = blkdiag(λ_i I + γ_i Π_i): the Q11 block with S = 0 and the P term (τ) left out."""
        vals = dict(values)
        if "tau" in vals:
            vals["tau"] = np.zeros_like(vals["tau"])
        return self.blocks(vals)[0]

    def params(self):
        ps = [Param("lambda", self.G, True), Param("gamma", self.G, False)]
        if self.has_p:
            ps.append(Param("tau", self.G, False))
        return ps

    def blocks(self, values):
        lam, gam = np.ravel(values["lambda"]), np.ravel(values["gamma"])
        tau = np.ravel(values["tau"]) if self.has_p else np.zeros(self.G)
        Ts, Ps = [], []
        for i in range(self.G):
            F = self.pi_factor(i)
            Pi = F @ F.T
            Ts.append(lam[i] * np.eye(self.g) + gam[i] * Pi)
            Ps.append(tau[i] * Pi)
        T, P = sla.block_diag(*Ts), sla.block_diag(*Ps)
        return T, P, -T - 2 * P

    def terms(self):
        g = self.g
        out = []
        # coefficient patterns on [Δv; Δφ] for T-type and P-type multipliers
        K_T = np.array([[1.0, 0.0], [0.0, -1.0]])
        K_P = np.array([[0.0, 1.0], [1.0, -2.0]])
        for i in range(self.G):
            rows = np.arange(i * g, (i + 1) * g)
            out.append(Term("lambda", i, self._pair(rows, np.arange(g), np.ones(g), g), np.kron(K_T, np.eye(g))))
            F = self.pi_factor(i)
            r = F.shape[1]
            rr, cc = np.nonzero(np.ones_like(F))
            Gi = self._pair(rows[rr], cc, F[rr, cc], r)
            out.append(Term("gamma", i, Gi, np.kron(K_T, np.eye(r))))
            if self.has_p:
                out.append(Term("tau", i, Gi, np.kron(K_P, np.eye(r))))
        return out


class GroupSortQC(_GroupQC):
    """GroupSort (MaxMin = group size 2): Π_i = 1 1^T (sum preservation, Lemma 1)."""

    def pi_factor(self, i):
        return np.ones((self.g, 1))

    def free_block(self, i):
        # the group's sum is kept: Δφ − Δv ⊥ 1, spanned by the exact differences e_j − e_{j+1}
        return np.eye(self.g, self.g - 1) - np.eye(self.g, self.g - 1, k=-1)


class HouseholderQC(_GroupQC):
    """Householder φ_v: Π_i = I − v_i v_i^T (Lemma 2); v = (1, −1)/√2 gives MaxMin."""

    def pi_factor(self, i):
        v = self.activation.vectors[i]
        # orthonormal basis of v's complement: Π = I − v v^T = F F^T
        return sla.null_space(v[None, :])

    def free_block(self, i):
        # φ_v(z) − z ∈ span(v): the stored (exact) v itself
        return np.asarray(self.activation.vectors[i], dtype=float).reshape(-1, 1)
