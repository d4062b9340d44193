"""Issue 13's extension contract: an activation family is one QC class (plus its IR activation) in
one file and one registry line; nothing else in lipsdp changes.  The family here is |x| (slope in
[-1, 1]); its bound must equal the slope-restricted formulation's and never fall below a real
difference quotient."""

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

import lipsdp
from lipsdp import Affine, Network, SlopeRestricted
from lipsdp.constraints import Param, QuadraticConstraint, Term, register_constraint
from lipsdp.ir import Activation


# --- the whole new family: what a newcomer writes in constraints/absval.py ------------------------
@dataclass(frozen=True, eq=False)
class AbsValue(Activation):
    """φ(v) = |v| elementwise: 1-Lipschitz, |Δφ| ≤ |Δv| per neuron."""

    name: str = ""
    size: int | None = None
    kind = "absval"

    def with_size(self, n):
        return AbsValue(self.name, n)

    def forward(self, v):
        return np.abs(v)

    def jacobian(self, v):
        return np.diag(np.sign(v))


class AbsValueQC(QuadraticConstraint):
    """For λ ≥ 0: Σ_i λ_i (Δv_i² − Δφ_i²) ≥ 0, i.e. Q = [[2Λ, 0], [0, −2Λ]] (the slope QC of
    math.md §2 with α = −1, β = 1)."""

    VARIANTS = {"neuron": "one λ per neuron", "layer": "one λ per layer", "chain": "same as neuron"}

    def params(self):
        return [Param("lambda", 1 if self.variant == "layer" else self.n, nonneg=True)]

    def blocks(self, values):
        lam = np.broadcast_to(np.ravel(values["lambda"]), (self.n,))
        return np.diag(2 * lam), np.zeros((self.n, self.n)), np.diag(-2 * lam)

    def terms(self):
        C = np.diag([2.0, -2.0])
        if self.variant == "layer":
            return [Term("lambda", 0, sp.identity(2 * self.n, format="csc"),
                         np.kron(np.diag([2.0, -2.0]), np.eye(self.n)))]
        return [Term("lambda", j, self._pair(np.array([j]), np.array([0]), np.array([1.0]), 1), C)
                for j in range(self.n)]


register_constraint("absval", AbsValueQC)  # the one registry line
# ---------------------------------------------------------------------------------------------------


def _net(act, seed=0):
    rng = np.random.default_rng(seed)
    return Network([Affine(rng.standard_normal((8, 5))), act, Affine(rng.standard_normal((6, 8))), act,
                    Affine(rng.standard_normal((2, 6)))])


def test_terms_agree_with_blocks():
    qc = AbsValueQC(AbsValue(size=4))
    vals = {"lambda": np.arange(1.0, 5.0)}
    np.testing.assert_allclose(qc.matrix(vals), qc.matrix_from_terms(vals))


@pytest.mark.parametrize("norm,output", [("l2", None), ("linf", 1)])
def test_new_family_certifies_like_the_equivalent_slope_family(norm, output):
    new = lipsdp.certify(_net(AbsValue()), norm=norm, output=output, solver="native")
    ref = lipsdp.certify(_net(SlopeRestricted("identity", alpha=-1.0, beta=1.0)), norm=norm, output=output,
                         solver="native", lower=False)
    assert new.verified and ref.verified
    assert new.bound == pytest.approx(ref.bound, rel=1e-6)
    assert new.lower_bound <= new.bound <= new.naive_bound * (1 + 1e-9)
