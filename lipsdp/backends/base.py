"""The backend interface: one small class per solver, capabilities as data.

A backend takes an :class:`~lipsdp.assembly.LMIProblem` and returns a :class:`SolveResult` in one
shared status vocabulary.  Its result is *never* a certificate by itself: the formulation's
independent check decides (lipsdp.check).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SolveOptions", "SolveResult", "Backend", "STATUSES"]

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


class Backend:
    """Base class.  Subclasses set ``name``, ``REQUIRED_MODULES`` and implement :meth:`solve`."""

    name: str = ""
    REQUIRED_MODULES: tuple[str, ...] = ()
    #: human description, shown by ``lipsdp solvers``
    description: str = ""

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
