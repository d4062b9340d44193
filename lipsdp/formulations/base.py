"""The :class:`Formulation` contract: (model, norm, method, output) → LMI problem → checked bound.

A formulation owns the three things that must agree with each other:

* :meth:`~Formulation.build` — the LMI of the model *as written* (original weights and
  coordinates), and :meth:`~Formulation.reductions` — the exact rewrites
  (:mod:`lipsdp.reductions`) stacked on it before a solver sees it; :meth:`~Formulation.problem`
  applies them;
* :meth:`~Formulation.recover` — a solver's point mapped back through those rewrites to the
  multipliers of the original LMI (projected onto their admissible set);
* :meth:`~Formulation.check` — the independent float64 check (:mod:`lipsdp.check`, math.md §9)
  of those multipliers on the original model, which gives the checked ρ';
  :meth:`~Formulation.bound_from_rho` turns it into the bound (rounded upwards).

A question that is several SDPs (ℓ∞ over every output) is a formulation whose :meth:`parts` are
the single SDPs and whose :meth:`combine` joins their certificates.  Register formulations in
:data:`lipsdp.formulations.FORMULATIONS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import numpy as np

from ..assembly import LMIProblem
from ..check import CheckResult
from ..errors import FormulationError
from ..linop import Dense, LinearOp, Sparse
from ..reductions import apply_all, invert_all

__all__ = ["Formulation", "Recovered", "select_output", "matrix_of"]


@dataclass
class Recovered:
    """Multipliers of the original LMI: one dict per QC, the solver's ρ and, for ℓ∞, the input τ."""

    layers: list[dict]
    rho_solver: float
    tau: np.ndarray | None = None


def select_output(W_last, output):
    """The last map restricted to one logit (int) or a direction c (vector): c^T W_l.

    Accepts an array or a :class:`~lipsdp.linop.LinearOp` and returns the same kind.
    """
    if output is None:
        return W_last
    op = W_last if isinstance(W_last, LinearOp) else None
    m = W_last.shape[0]
    if isinstance(output, (int, np.integer)) and not isinstance(output, (bool, np.bool_)):
        if not 0 <= int(output) < m:
            raise FormulationError(f"output={output} is out of range: the network has {m} outputs (0..{m - 1})")
        if op is None:
            return W_last[[int(output)], :]
        return Dense(op.to_dense()[[int(output)]]) if isinstance(op, Dense) else Sparse(op.to_sparse()[[int(output)]])
    c = np.asarray(output, dtype=float).ravel()
    if c.shape[0] != m or not np.all(np.isfinite(c)):
        raise FormulationError(f"output vector c must have {m} finite entries (one per output), got shape {c.shape}")
    if op is None:
        return (c @ W_last)[None, :]
    return Dense(op.rmatvec(c)[None, :])


def matrix_of(op: LinearOp):
    """The operator as the check uses it: a dense array, or scipy sparse for structured ones."""
    return op.to_dense() if isinstance(op, Dense) else op.to_sparse()


class Formulation(ABC):
    """Base class; see the module docstring.  Subclasses set ``norm`` and ``qcs`` (one QC per
    activation block) and implement the abstract methods."""

    norm: str = ""
    qcs: list = []

    def __init__(self, model, method: str = "neuron", output=None):
        self.model = model
        self.method = method
        self.output = output

    # --- the LMI ----------------------------------------------------------------------------
    @abstractmethod
    def build(self) -> LMIProblem:
        """The LMI of the model as written (original coordinates), layout names ``rho``,
        ``layer{k}.{param}`` (and ``tau`` for ℓ∞)."""

    def reductions(self) -> list:
        """The exact rewrites applied before solving (default: none)."""
        return []

    def start(self, problem: LMIProblem) -> np.ndarray | None:
        """A strictly feasible point of the reduced problem, or None (default)."""
        return None

    def problem(self) -> LMIProblem:
        """The problem a backend solves: :meth:`build` with :meth:`reductions` applied."""
        p = apply_all(self.build(), self.reductions())
        start = self.start(p)
        return p if start is None else replace(p, start=start)

    # --- back from a solver -------------------------------------------------------------------
    def recover(self, problem: LMIProblem, theta: np.ndarray) -> Recovered:
        """The multipliers of the original LMI from a point θ of ``problem``."""
        th = invert_all(problem, theta)
        layout = self._layout or problem.layout  # the original problem's layout (set by build)
        layers = []
        for k, qc in enumerate(self.qcs, start=1):
            layers.append(qc.project({p.name: np.asarray(th[layout[f"layer{k}.{p.name}"]], dtype=float)
                                      for p in qc.params()}))
        tau = np.maximum(th[layout["tau"]], 0.0) if "tau" in layout else None
        return Recovered(layers, float(th[layout["rho"]][0]), tau)

    def zero_point(self) -> Recovered:
        """All multipliers zero (for models with nothing to solve)."""
        return Recovered([{p.name: np.zeros(p.size) for p in qc.params()} for qc in self.qcs], 0.0)

    @abstractmethod
    def check(self, rec: Recovered) -> CheckResult:
        """The independent check of ``rec`` on the original model (checked ρ' in ``.rho``)."""

    # --- numbers ------------------------------------------------------------------------------
    @abstractmethod
    def naive_bound(self) -> float:
        """The compositional bound (product of norms), for comparison."""

    def bound_from_value(self, rho: float) -> float:
        """The bound a value of ρ stands for (ℓ2: sqrt(ρ); ℓ∞ overrides: ρ)."""
        return float(np.sqrt(max(rho, 0.0)))

    def bound_from_rho(self, rho: float) -> float:
        """The reported bound from a checked ρ', rounded upwards."""
        return float(np.nextafter(self.bound_from_value(rho), np.inf))

    def trivial(self) -> float | None:
        """A bound known without solving (zero weights), else None."""
        return None

    def lower_bound(self) -> tuple[float, str]:
        """(a lower bound on the same constant, its kind: "quotient" — a real difference quotient —
        or "exact" — the exact constant, from the MILP of :mod:`lipsdp.milp`)."""
        from ..lower import lower_bound

        lb = lower_bound(self.model, norm=self.norm, output=self.output)
        return float(lb), getattr(lb, "kind", "quotient")

    def region_info(self) -> dict | None:
        """The input region the bound holds on (None: everywhere)."""
        return None

    # --- composition --------------------------------------------------------------------------
    def parts(self) -> list["Formulation"]:
        """The single SDPs this question consists of (default: itself)."""
        return [self]

    def combine(self, certs: list):
        """The certificate of the whole question from those of :meth:`parts`."""
        (cert,) = certs
        return cert

    # --- description ---------------------------------------------------------------------------
    @property
    def check_order(self) -> int | None:
        """Order of the matrix the check factorises (for the memory estimate), if known."""
        return None

    def describe(self) -> str:
        return repr(self.model)

    def dims(self) -> list[int]:
        return []

    _layout: dict = {}
