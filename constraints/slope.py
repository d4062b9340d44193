"""Slope-restricted elementwise activations: LipSDP-Neuron and LipSDP-Layer.

Fazlyab, Robey, Hassani, Morari, Pappas, "Efficient and Accurate Estimation of Lipschitz
Constants for Deep Neural Networks", NeurIPS 2019 (arXiv 1906.04893), Lemma 1 / Theorem 2.
For φ with slope in [α_i, β_i] on neuron i and every T = diag(λ), λ ≥ 0::

    [Δv; Δφ]^T [[−2 diag(αβ) T, diag(α+β) T], [diag(α+β) T, −2T]] [Δv; Δφ] ≥ 0.

* ``neuron``: one λ_i per neuron (default, tighter).
* ``layer``:  one λ per layer (T = λI; looser, cheaper).

The coupled "LipSDP-Network" multipliers (T = diag + Σ z_ij (e_i − e_j)(e_i − e_j)^T) are NOT a
valid QC for ReLU — on refdata/LipSDP/mnist_weights.mat they give 24.0265, below the true
difference quotient 24.29922 (Pauli et al., IEEE L-CSS 2021, arXiv 2005.02929) — so they are
refused.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

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
        "layer": "one multiplier per layer (LipSDP-Layer)",
        "chain": "same as neuron (slope-restricted QCs have no coupling terms)",
    }

    def __init__(self, activation, variant=None):
        if variant in UNSOUND:
            raise FormulationError(UNSOUND[variant])
        super().__init__(activation, variant)
        self.alpha = np.asarray(activation.alpha, dtype=float)
        self.beta = np.asarray(activation.beta, dtype=float)

    def params(self):
        return [Param("lambda", 1 if self.variant == "layer" else self.n, nonneg=True)]

    metric_params = ("lambda",)

    def metric(self, values):
        """T = diag(λ) (Q22 = −2T)."""
        return -0.5 * self.blocks(values)[2]

    def blocks(self, values):
        lam = np.broadcast_to(np.asarray(values["lambda"], dtype=float).ravel(), (self.n,))
        return (
            np.diag(-2.0 * self.alpha * self.beta * lam),
            np.diag((self.alpha + self.beta) * lam),
            np.diag(-2.0 * lam),
        )

    def terms(self):
        a, b, n = self.alpha, self.beta, self.n
        if self.variant == "layer":
            C = np.block([[np.diag(-2 * a * b), np.diag(a + b)], [np.diag(a + b), -2 * np.eye(n)]])
            return [Term("lambda", 0, sp.identity(2 * n, format="csc"), C)]
        return [
            Term(
                "lambda",
                j,
                self._pair(np.array([j]), np.array([0]), np.array([1.0]), 1),
                np.array([[-2 * a[j] * b[j], a[j] + b[j]], [a[j] + b[j], -2.0]]),
            )
            for j in range(n)
        ]
