"""The backend interface: one small class per solver, capabilities as data.

A backend takes an :class:`~lipsdp.assembly.LMIProblem` and returns a :class:`SolveResult` in one
shared status vocabulary.  Its result is *never* a certificate by itself: the formulation's
independent check decides (lipsdp.check, math.md §9).

What a backend can do is declared on its class, and everything that chooses or sizes a solver
reads these declarations from the registry (``lipsdp.backends.REGISTRY``) instead of naming
solvers: ``choose_auto`` and ``candidates`` (the auto choice and its fallbacks), the memory guard
(:mod:`lipsdp.memory`) and the ``decompose="auto"`` rule (:func:`lipsdp.chordal.should_decompose`).

=====================  ==========================================================================
declaration            meaning (default)
=====================  ==========================================================================
``accepts(problem)``   classmethod, cheap: can this backend solve ``problem`` at all (True).
``requires``           what ``accepts`` needs, in words, for the refusal message ("").
``memory_doubles``     classmethod ``(problem) -> {component: 8-byte doubles}``: the peak-memory
                       model used by the guard (default: the most conservative documented one).
``anytime``            returns a usable (strictly feasible) iterate when stopped early (False).
``exploits``           the problem structure it exploits, e.g. ``"low-rank terms"``,
                       ``"block-tridiagonal"``, ``"cone-order"`` (()).
``decomposition_pays`` cost dominated by the PSD cone order, so a chordal split pays (False).
``accurate``           interior point: suitable as a fallback after the auto choice (False).
``licence``            the solver's licence, shown to users ("").
``auto_rank``          auto preference, lower first; None: never picked by auto (None).
``auto_max_order``     auto picks it only for LMI orders up to this (inf) ...
``auto_min_order``     ... and from this order on (0) ...
``auto_min_blocks``    ... with at least this many coordinate blocks per LMI (0) ...
``auto_max_density``   ... and at most this many nonzeros in the term columns per order² (inf).
=====================  ==========================================================================
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SolveOptions", "SolveResult", "Backend", "STATUSES", "ProblemStats", "problem_stats"]

#: the shared status vocabulary
STATUSES = ("optimal", "optimal_inaccurate", "infeasible", "unbounded", "time_limit", "error")


@dataclass(frozen=True)
class SolveOptions:
    """Options every backend understands (defaults in one place).

    tol: relative accuracy asked of the solver; time_limit: seconds (None = none);
    verbose: print the solver log; max_iters: iteration cap (None = solver default).
    """

    tol: float = 1e-8
    time_limit: float | None = None
    verbose: bool = False
    max_iters: int | None = None


@dataclass
class SolveResult:
    status: str
    theta: np.ndarray | None
    objective: float | None
    seconds: float
    iterations: int | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ProblemStats:
    """The sizes a memory model needs.

    m: number of multipliers; orders: LMI orders n_j; nnz: nonzeros of the solver's data matrix,
    bounded by Σ_i r_i² (r_i nonzero rows of U_i) plus nnz(F0); R: total columns of the U_i;
    blocks: coordinate block sizes of every LMI.
    """

    m: int
    orders: tuple[int, ...]
    nnz: int
    R: int
    blocks: tuple[int, ...] = ()

    @property
    def sum_sq(self) -> float:
        """Σ_j n_j² (dense storage of one matrix per PSD cone)."""
        return float(sum(float(k) ** 2 for k in self.orders))


def problem_stats(problem) -> ProblemStats:
    """:class:`ProblemStats` of an :class:`~lipsdp.assembly.LMIProblem` (a ``ProblemStats`` is
    returned unchanged, so memory models also size problems that were never built)."""
    if isinstance(problem, ProblemStats):
        return problem
    nnz = cols = 0
    for lmi in problem.lmis:
        for t in lmi.terms:
            U = t.U
            r = len(np.unique(U.tocsc().indices)) if hasattr(U, "tocsc") else int(np.count_nonzero(np.any(U, axis=1)))
            nnz += r * r
            cols += int(U.shape[1])
        nnz += int(lmi.F0.nnz)
    return ProblemStats(
        m=int(problem.n_vars),
        orders=tuple(int(l.size) for l in problem.lmis),
        nnz=int(nnz),
        R=int(cols),
        blocks=tuple(int(b) for l in problem.lmis for b in (l.blocks or [l.size])),
    )


class Backend:
    """Base class.  Subclasses set ``name``, ``REQUIRED_MODULES``, their declarations (module
    docstring) and implement :meth:`solve`."""

    name: str = ""
    REQUIRED_MODULES: tuple[str, ...] = ()
    #: human description, shown by ``lipsdp solvers``
    description: str = ""
    #: the solver's licence (SPDX identifier where there is one)
    licence: str = ""
    #: returns a usable (strictly feasible) iterate when stopped early
    anytime: bool = False
    #: problem structure the solver exploits ("low-rank terms", "block-tridiagonal", "cone-order")
    exploits: tuple[str, ...] = ()
    #: cost dominated by the PSD cone order: a chordal split into smaller cones pays
    decomposition_pays: bool = False
    #: interior point (accurate): a fallback when the auto choice fails
    accurate: bool = False
    #: what :meth:`accepts` needs, in words (for the refusal message)
    requires: str = ""
    #: auto preference: lower rank first; None = never picked by ``solver="auto"``
    auto_rank: float | None = None
    #: auto picks this backend only when auto_min_order ≤ largest LMI order ≤ auto_max_order and
    #: every LMI has at least auto_min_blocks coordinate blocks
    auto_max_order: float = float("inf")
    auto_min_order: float = 0
    auto_min_blocks: int = 0
    #: ... and the term columns hold at most this many nonzeros per order² (sparse LMIs: convolutions)
    auto_max_density: float = float("inf")

    @classmethod
    def accepts(cls, problem) -> bool:
        """Whether this backend can solve ``problem`` at all (cheap: no factorisation)."""
        return True

    @classmethod
    def memory_doubles(cls, problem) -> dict[str, float]:
        """Peak memory by component, in 8-byte doubles (``problem``: an LMIProblem or its
        :class:`ProblemStats`).  Default, for a backend that declares nothing: the larger of a
        Schur-complement interior point (m² + m·Σ n_j²) and a first-order splitting method
        (2·nnz + 3·Σ n_j²), plus a modelling layer (6·nnz + 2·Σ n_j²)."""
        s = problem_stats(problem)
        return {cls.name or "solver": max(float(s.m) ** 2 + float(s.m) * s.sum_sq, 2.0 * s.nnz + 3.0 * s.sum_sq),
                "modelling": 6.0 * s.nnz + 2.0 * s.sum_sq}

    @classmethod
    def is_installed(cls) -> bool:
        """All required modules importable (checked without importing them)."""
        return all(importlib.util.find_spec(m) is not None for m in cls.REQUIRED_MODULES)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable, reason).  Override to check licences."""
        if not cls.is_installed():
            missing = [m for m in cls.REQUIRED_MODULES if importlib.util.find_spec(m) is None]
            return False, f"{cls.name} is not installed (missing Python module(s): {', '.join(missing)})"
        return True, ""

    def solve(self, problem, options: SolveOptions) -> SolveResult:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _guarded(run, problem, options: SolveOptions) -> SolveResult:
        """``run(problem, options, t0)`` with an out-of-memory error turned into an "error" result
        (lipsdp's own solvers allocate with numpy; a MemoryError must not escape as a traceback)."""
        import time

        t0 = time.perf_counter()
        try:
            return run(problem, options, t0)
        except MemoryError as exc:
            return SolveResult("error", None, None, time.perf_counter() - t0, message=f"out of memory: {exc}")
