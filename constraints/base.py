"""The shared base of every quadratic-constraint (QC) generator.

For an activation layer with n neurons, a QC is a set of matrices Q(θ), linear in multipliers θ,
such that for all pre-activations v, w (Δv = v − w, Δφ = φ(v) − φ(w))::

    [Δv; Δφ]^T Q(θ) [Δv; Δφ] ≥ 0,     Q(θ) = [[Q11, Q12], [Q12^T, Q22]]   (2n × 2n)

for every admissible θ (some entries ≥ 0, others free).  A subclass gives the QC twice:

* :meth:`blocks` — Q11, Q12, Q22 as dense numpy arrays straight from the paper's formula.  The
  independent certificate check uses this.
* :meth:`terms` — the same Q(θ) as a sum Σ_j θ_j G_j C_j G_j^T of low-rank pieces (G_j sparse
  2n × r_j, C_j a small symmetric r_j × r_j matrix).  SDP assembly and structure-exploiting
  solvers use this.

Tests check that the two agree for random θ, so the check is independent of the assembly path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lipsdp.errors import FormulationError

__all__ = ["Param", "Term", "QuadraticConstraint"]


@dataclass(frozen=True)
class Param:
    """A named block of multipliers: ``size`` scalars, all ≥ 0 when ``nonneg`` else free."""

    name: str
    size: int
    nonneg: bool


@dataclass(frozen=True)
class Term:
    """θ_{param}[index] · G C G^T: one multiplier's contribution to Q(θ)."""

    param: str
    index: int
    G: sp.csc_matrix  # (2n, r)
    C: np.ndarray  # (r, r), symmetric


class QuadraticConstraint:
    """Base class: one instance per activation layer.

    ``variant`` selects the multiplier class; subclasses list theirs in ``VARIANTS`` (a dict
    variant → one-line description).  Asking for an unknown or unsound variant raises
    :class:`lipsdp.errors.FormulationError`.
    """

    #: variant name -> description; the first one is the default.
    VARIANTS: dict[str, str] = {}

    def __init__(self, activation, variant: str | None = None):
        self.activation = activation
        self.n = int(activation.size)
        variant = variant or next(iter(self.VARIANTS))
        if variant not in self.VARIANTS:
            raise FormulationError(
                f"{type(self).__name__}: unknown method {variant!r} for a {activation.describe()} layer; "
                f"valid: {', '.join(self.VARIANTS)}"
            )
        self.variant = variant

    # --- to implement ---------------------------------------------------------------------
    def params(self) -> list[Param]:
        raise NotImplementedError

    def blocks(self, values: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Q11, Q12, Q22) for multiplier values ``values[param.name]`` (dense, n × n each)."""
        raise NotImplementedError

    def terms(self) -> list[Term]:
        raise NotImplementedError

    def free_basis(self) -> np.ndarray | None:
        """An exactly representable matrix B (n × f) with Δφ − Δv ∈ range(B) for every pair of
        inputs — what φ can change; the rest passes through unchanged (GroupSort keeps each
        group's sum: B = differences e_j − e_{j+1}; Householder: B = v per group) — or None.

        Where it is not None, the multipliers named in :attr:`penalty` only add terms that vanish
        on that subspace, and lipsdp solves and checks on it (:mod:`lipsdp.formulations.reduced`).
        """
        return None

    #: the multipliers that enter :meth:`metric`
    metric_params: tuple = ()

    def metric(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """T(θ) ⪰ 0 such that φ is non-expansive in ‖z‖_T = sqrt(z^T T z) (used by the
        well-posedness condition of implicit models, math.md §8).  Not every family has one."""
        raise FormulationError(
            f"{type(self).__name__} gives no metric in which the activation is non-expansive, which "
            "implicit models need (math.md §8); use a slope-restricted, GroupSort or Householder activation")

    #: {param: coefficient}: θ_param = coefficient · t gives a term ∝ −t‖P^T(Δv − Δφ)‖² (t ≥ 0),
    #: an exact penalty of the equality that :meth:`free_basis` encodes
    penalty: dict[str, float] = {}

    # --- shared -------------------------------------------------------------------------
    @property
    def n_multipliers(self) -> int:
        return sum(p.size for p in self.params())

    def matrix(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """The full 2n × 2n Q(θ) from :meth:`blocks`."""
        Q11, Q12, Q22 = self.blocks(values)
        return np.block([[Q11, Q12], [Q12.T, Q22]])

    def matrix_from_terms(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """Q(θ) = Σ θ_j G_j C_j G_j^T from :meth:`terms` (for tests and debugging)."""
        Q = np.zeros((2 * self.n, 2 * self.n))
        for t in self.terms():
            G = t.G.toarray()
            Q += values[t.param][t.index] * (G @ t.C @ G.T)
        return Q

    def project(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Nearest admissible multipliers: clip the ≥ 0 ones at zero (solvers return −1e−9)."""
        out = {}
        for p in self.params():
            v = np.asarray(values[p.name], dtype=float).reshape(p.size)
            out[p.name] = np.maximum(v, 0.0) if p.nonneg else v.copy()
        return out

    def scaled(self, values: dict[str, np.ndarray], factor: float) -> dict[str, np.ndarray]:
        """Multipliers for the same QC after the coordinates are scaled by 1/sqrt(factor).

        Q(θ) is linear in θ, so a quadratic form scaled by ``factor`` is Q(factor · θ).
        """
        return {k: np.asarray(v, dtype=float) * factor for k, v in values.items()}

    # --- helpers for subclasses -------------------------------------------------------------
    def _pair(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, r: int) -> sp.csc_matrix:
        """G = [E; 0] ⊕ [0; E] where E (n × r) has ``vals`` at (rows, cols)."""
        n = self.n
        # CSC arrays directly (no COO conversion: the per-neuron factors of a 784-100×5-10 net are
        # 500 calls, and the conversion was most of the problem build); entries are distinct
        order = np.lexsort((rows, cols))
        rows, cols, vals = np.asarray(rows)[order], np.asarray(cols)[order], np.asarray(vals, dtype=float)[order]
        counts = np.bincount(cols, minlength=r)
        indptr = np.concatenate([[0], np.cumsum(np.concatenate([counts, counts]))])
        return sp.csc_matrix((np.concatenate([vals, vals]), np.concatenate([rows, rows + n]), indptr),
                             shape=(2 * n, 2 * r))
