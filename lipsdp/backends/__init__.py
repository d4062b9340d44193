"""Solver backends behind one small interface, in one preference-ordered registry.

``get_backend(name)`` returns an instance (raising a clear error for unknown or unusable
solvers); ``installed_backends()`` lists what can run here; ``choose_auto(problem)`` picks by
problem size, from measurements recorded in the README ("Choosing a solver").
"""

from __future__ import annotations

from lipsdp.errors import SolverError, SolverNotAvailableError

from .base import Backend, SolveOptions, SolveResult, STATUSES
from .cvxpy_backends import ClarabelBackend, CVXOPTBackend, MOSEKBackend, SCSBackend, SDPABackend
from .native import NativeBackend
from .chain import ChainBackend

__all__ = [
    "Backend",
    "SolveOptions",
    "SolveResult",
    "STATUSES",
    "REGISTRY",
    "register_backend",
    "get_backend",
    "installed_backends",
    "choose_auto",
    "candidates",
    "AUTO_RULES",
    "CHAIN_MIN_BLOCKS",
    "CHAIN_MIN_ORDER",
]

#: name -> backend class, in order of preference
REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Add a backend class (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Backend) and cls.name):
        raise TypeError(f"register_backend: {cls!r} must be a Backend subclass with a name")
    REGISTRY[cls.name] = cls
    return cls


for _cls in (NativeBackend, CVXOPTBackend, SDPABackend, ClarabelBackend, SCSBackend, MOSEKBackend, ChainBackend):
    register_backend(_cls)


def installed_backends() -> list[str]:
    """Names of the backends that can run on this machine (installed and licensed)."""
    return [name for name, cls in REGISTRY.items() if cls.availability()[0]]


def get_backend(name: str) -> Backend:
    key = str(name).lower()
    if key not in REGISTRY:
        raise SolverError(f"unknown solver {name!r}; valid: auto, {', '.join(REGISTRY)}")
    cls = REGISTRY[key]
    ok, why = cls.availability()
    if not ok:
        raise SolverNotAvailableError(f"{why}; installed solvers: {', '.join(installed_backends()) or 'none'}")
    return cls()


#: (largest LMI order, solver) in order: the first whose limit is not exceeded and that is
#: installed wins.  Measured on 2 cores, see README "Choosing a solver".
AUTO_RULES: list[tuple[float, str]] = [
    # native (lipsdp's low-rank primal-dual IPM) measured in one run on 2 loaded cores:
    # mnist_weights.mat (order 100) 1.65 s vs CVXOPT 3.76 s, same checked bound to 7e-10;
    # 784-100×5-10 (order 600) ≈ 36 s wall / 9.5 s CPU vs CVXOPT 1 858 s wall (bounds 4.0182627 vs
    # 4.0182644 checked).  CVXOPT kept for tiny LMIs, where both take well under a second.
    (60, "cvxopt"),
    (float("inf"), "native"),
]


#: deep layer chains go to the linear-in-depth ``chain`` backend: at least this many coordinate
#: blocks and this LMI order, and every LMI block tridiagonal.  Measured on the ECLipsE grid
#: (width 80, benchmarks/run.py; one run, 2 cores): depth 20 (order 1605) within a 48 s budget chain
#: 0.00605 vs native 0.0158, to optimality 88 s vs 74 s (same bound to 0.3%); depth 50 / 100:
#: 1.13e-7 / 6.97e-10 vs native's 1.81e-7 / 1.54e-9 (a dense Newton step there costs tens of s).
CHAIN_MIN_BLOCKS = 20
CHAIN_MIN_ORDER = 1500


def choose_auto(problem) -> str:
    order = problem.max_order
    avail = set(installed_backends())
    if (order >= CHAIN_MIN_ORDER and "chain" in avail
            and min(len(lmi.blocks) for lmi in problem.lmis) >= CHAIN_MIN_BLOCKS
            and ChainBackend.applies(problem)):
        return "chain"
    for limit, name in AUTO_RULES:
        if order <= limit and name in avail:
            return name
    for name in REGISTRY:
        if name in avail:
            return name
    raise SolverNotAvailableError("no SDP solver is installed; pip install cvxopt (or scs, clarabel)")


#: accurate backends tried in turn after the auto choice fails (no point, or one failing the check)
AUTO_FALLBACKS = ("native", "sdpa", "scs")


def candidates(problem, solver: str = "auto") -> list[Backend]:
    """The backends to try, in order: for "auto" the auto choice then the installed fallbacks; for
    a name, that backend alone."""
    if str(solver).lower() != "auto":
        return [get_backend(solver)]
    first = get_backend(choose_auto(problem))
    avail = installed_backends()
    return [first] + [get_backend(n) for n in AUTO_FALLBACKS if n != first.name and n in avail]
