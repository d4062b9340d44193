"""Local Lipschitz bounds: a bound valid for pairs of inputs inside a region (math.md §2, with
per-neuron slopes from bound propagation).

On a region R (a box, an ℓ∞ ball or an ℓ2 ball), every pre-activation v_i stays in an interval
[l_i, u_i] (interval and CROWN-style linear bound propagation, :mod:`lipsdp.local`).  There the
activation's slope lies in [α_i, β_i] ⊆ its global interval — [1, 1] for a stably active ReLU,
[0, 0] for a stably inactive one, the range of φ' over [l_i, u_i] for smooth φ — and a GroupSort
whose groups keep their order is a fixed permutation.  :func:`lipsdp.local.localize` writes
those slopes into the network, so the usual LipSDP LMI (any QC family, ℓ2 or ℓ∞) on the localised
network certifies

    ‖f(x) − f(x')‖ ≤ L_local ‖x − x'‖     for all x, x' ∈ R,

and the independent check verifies that LMI with the local slopes (the QC is valid for every pair
of pre-activations in the boxes, which contain every pair of trajectories from R).  L_local ≤ the
global bound, with equality when R is so large that no neuron is stable.  The certificate records
the region; its lower bound is a difference quotient of two points inside R.

Shi et al., "Efficiently Computing Local Lipschitz Constants of Neural Networks via Bound
Propagation" (NeurIPS 2022) for the bound propagation; Fazlyab et al. (NeurIPS 2019) for the QC.
"""

from __future__ import annotations

from .base import Formulation

__all__ = ["Local"]


class Local(Formulation):
    """The question "Lipschitz constant on ``region``": the formulation ``factory`` builds for the
    localised network, with the region recorded and an in-region lower bound."""

    def __init__(self, network, region, norm: str, method: str = "neuron", output=None, factory=None, crown=True):
        from ..local import as_region, localize

        super().__init__(network, method, output)
        self.network = network
        self.region = as_region(region, network.input_dim)
        self.norm = norm
        self.inner = factory(localize(network, self.region, crown=crown), norm, method, output)
        self.qcs = self.inner.qcs

    @classmethod
    def _part(cls, inner, parent: "Local") -> "Local":
        part = cls.__new__(cls)
        Formulation.__init__(part, parent.network, parent.method, inner.output)
        part.network, part.region, part.norm, part.inner, part.qcs = parent.network, parent.region, parent.norm, \
            inner, inner.qcs
        return part

    # --- delegated to the formulation of the localised network --------------------------------
    def build(self):
        return self.inner.build()

    def reductions(self):
        return self.inner.reductions()

    def start(self, problem):
        return self.inner.start(problem)

    def problem(self):
        return self.inner.problem()

    def recover(self, problem, theta):
        return self.inner.recover(problem, theta)

    def zero_point(self):
        return self.inner.zero_point()

    def check(self, rec):
        res = self.inner.check(rec)
        res.message = f"{res.message}; local bound on the {self.region.describe()} (slopes from bound propagation)"
        return res

    def naive_bound(self):
        return self.inner.naive_bound()

    def bound_from_value(self, rho):
        return self.inner.bound_from_value(rho)

    def trivial(self):
        return self.inner.trivial()

    def dims(self):
        return self.inner.dims()

    @property
    def check_order(self):
        return self.inner.check_order

    def parts(self):
        inner_parts = self.inner.parts()
        if len(inner_parts) == 1 and inner_parts[0] is self.inner:
            return [self]
        return [Local._part(p, self) for p in inner_parts]

    def combine(self, certs):
        return self.inner.combine(certs)

    # --- what is local ----------------------------------------------------------------------
    def lower_bound(self):
        """A difference quotient of two inputs inside the region (the localised network is a
        different function outside it, so the global search does not apply)."""
        from ..local import region_lower_bound

        return float(region_lower_bound(self.network, self.region, norm=self.norm, output=self.output)), "quotient"

    def region_info(self):
        lo, hi = self.region.bounds(self.network.input_dim)
        return {"type": type(self.region).__name__, "description": self.region.describe(),
                "lo": lo.tolist(), "hi": hi.tolist()}

    def describe(self):
        return f"{self.network!r} on the {self.region.describe()}"
