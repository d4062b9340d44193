"""Slope-restricted elementwise activations: LipSDP-Neuron, GLipSDP's channel-wise and LipSDP-Layer.

Fazlyab, Robey, Hassani, Morari, Pappas, "Efficient and Accurate Estimation of Lipschitz
Constants for Deep Neural Networks", NeurIPS 2019 (arXiv 1906.04893), Lemma 1 / Theorem 2.
For φ with slope in [α_i, β_i] on neuron i and every T = diag(λ), λ ≥ 0::

    [Δv; Δφ]^T [[−2 diag(αβ) T, diag(α+β) T], [diag(α+β) T, −2T]] [Δv; Δφ] ≥ 0.

Each neuron's 2 × 2 form is ≥ 0 on its own, so any T = diag(λ) with λ ≥ 0 is valid; the
variants differ only in which neurons share a multiplier:

* ``neuron``:  one λ_i per neuron (default, tightest).
* ``channel``: one λ_c per channel, shared by the H·W neurons of channel c (T = blkdiag(λ_c I_HW)),
  the choice of GLipSDP (Pauli, Wang, Berberich, Allgöwer, "Lipschitz constant estimation for
  general neural network architectures using control tools", arXiv 2405.01125).  Neurons are in
  (C, H, W) order, so channel c is the contiguous block [c·HW, (c+1)·HW); the layout comes from
  ``SlopeRestricted.channels`` (set by :class:`lipsdp.ir.Network` after a convolution).  After a
  dense layer each neuron is its own channel (= ``neuron``).  A sub-family of ``neuron``: sound,
  never tighter, far fewer multipliers.
* ``layer``:   one λ per layer (T = λI; looser, cheaper).

:meth:`terms` gives every variant as the same per-neuron rank-2 pieces; a shared multiplier is
several pieces with one (param, index) (backends sum them), so solvers see each neuron's
sparsity whatever the sharing.

The coupled "LipSDP-Network" multipliers (T = diag + Σ z_ij (e_i − e_j)(e_i − e_j)^T) are NOT a
valid QC for ReLU — on refdata/LipSDP/mnist_weights.mat they give 24.0265, below the true
difference quotient 24.29922 (Pauli et al., IEEE L-CSS 2021, arXiv 2005.02929) — so they are
refused.
"""

from __future__ import annotations

import numpy as np

from lipsdp.errors import FormulationError

from .base import Param, QuadraticConstraint, Term

__all__ = ["SlopeRestrictedQC"]

UNSOUND = {
    "network": (
        "the coupled 'LipSDP-Network' multipliers are not a valid quadratic constraint for ReLU-type "
        "activations (Pauli et al., IEEE L-CSS 2021): on refdata/LipSDP/mnist_weights.mat they return "
        "24.0265, below a true difference quotient of 24.29922. Use method='neuron' (tightest sound "
        "choice) or 'layer'."
    ),
}


class SlopeRestrictedQC(QuadraticConstraint):
    VARIANTS = {
        "neuron": "one multiplier per neuron (LipSDP-Neuron)",
        "channel": "one multiplier per channel after a convolution, per neuron after a dense layer (GLipSDP)",
        "layer": "one multiplier per layer (LipSDP-Layer)",
        "chain": "same as neuron (slope-restricted QCs have no coupling terms)",
    }

    def __init__(self, activation, variant=None):
        if variant in UNSOUND:
            raise FormulationError(UNSOUND[variant])
        super().__init__(activation, variant)
        self.alpha = np.asarray(activation.alpha, dtype=float)
        self.beta = np.asarray(activation.beta, dtype=float)
        #: owner[i] = the multiplier of neuron i
        self.owner = self._owners()

    def _owners(self) -> np.ndarray:
        n = self.n
        if self.variant == "layer":
            return np.zeros(n, dtype=int)
        channels = getattr(self.activation, "channels", None) if self.variant == "channel" else None
        if not channels:
            return np.arange(n)
        if n % channels:
            raise FormulationError(f"method='channel': {n} neurons cannot be split into {channels} channels")
        return np.arange(n) // (n // channels)

    def params(self):
        return [Param("lambda", int(self.owner[-1]) + 1, nonneg=True)]

    metric_params = ("lambda",)

    def metric(self, values):
        """T = diag(λ) (Q22 = −2T)."""
        return -0.5 * self.blocks(values)[2]

    def blocks(self, values):
        lam = np.asarray(values["lambda"], dtype=float).ravel()[self.owner]
        return (
            np.diag(-2.0 * self.alpha * self.beta * lam),
            np.diag((self.alpha + self.beta) * lam),
            np.diag(-2.0 * lam),
        )

    def terms(self):
        a, b = self.alpha, self.beta
        return [
            Term(
                "lambda",
                int(self.owner[j]),
                self._pair(np.array([j]), np.array([0]), np.array([1.0]), 1),
                np.array([[-2 * a[j] * b[j], a[j] + b[j]], [a[j] + b[j], -2.0]]),
            )
            for j in range(self.n)
        ]
