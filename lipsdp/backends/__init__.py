"""Solver backends behind one small interface, in one registry; capabilities as declarations.

Each backend class declares what it can do (:mod:`lipsdp.backends.base`: ``accepts``,
``memory_doubles``, ``anytime``, ``exploits``, ``decomposition_pays``, ``accurate``, ``licence``
and its auto preference).  Everything here reads those declarations; nothing names a solver:

- ``get_backend(name)`` returns an instance (a clear error for unknown or unusable solvers);
- ``installed_backends()`` lists what can run here;
- ``choose_auto(problem)`` picks the installed backend of lowest ``auto_rank`` whose size window
  (``auto_min_order`` ≤ largest LMI order ≤ ``auto_max_order``, at least ``auto_min_blocks``
  coordinate blocks per LMI, term columns no denser than ``auto_max_density``) admits the problem and which ``accepts`` it;
- ``candidates(problem, solver)`` is what ``certify`` tries in turn: for ``"auto"`` the auto
  choice then the other ranked backends that admit and accept the problem (accurate ones first);
  for a name, that backend alone, or an error saying why it cannot and what can.

Adding a backend: a :class:`Backend` subclass with its declarations in its own file, and one
line in :data:`BUILTIN` here (``"myfile:MyBackend"``), or ``register_backend(MyBackend)`` in user
code.
"""

from __future__ import annotations

import importlib

from lipsdp.errors import SolverError, SolverNotAvailableError

from .base import Backend, ProblemStats, SolveOptions, SolveResult, STATUSES, problem_stats
from .chain import ChainBackend

__all__ = [
    "Backend",
    "SolveOptions",
    "SolveResult",
    "STATUSES",
    "ProblemStats",
    "problem_stats",
    "REGISTRY",
    "BUILTIN",
    "register_backend",
    "backend_class",
    "get_backend",
    "installed_backends",
    "choose_auto",
    "candidates",
    "suggest_solvers",
    "CHAIN_MIN_BLOCKS",
    "CHAIN_MIN_ORDER",
]

#: name -> backend class, in registration order (ties in the auto order and listings follow it)
REGISTRY: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Add a backend class (usable as a decorator); a class of the same name is replaced."""
    if not (isinstance(cls, type) and issubclass(cls, Backend) and cls.name):
        raise TypeError(f"register_backend: {cls!r} must be a Backend subclass with a name")
    REGISTRY[cls.name] = cls
    return cls


#: deep layer chains go to the linear-in-depth ``chain`` backend (its declarations; kept as names)
CHAIN_MIN_BLOCKS = ChainBackend.auto_min_blocks
CHAIN_MIN_ORDER = ChainBackend.auto_min_order


#: the built-in backends, one line each ("module:Class" under lipsdp.backends), in listing order;
#: what auto prefers is declared on the classes
BUILTIN = (
    "native:NativeBackend",
    "spectral:SpectralBackend",
    "cvxpy_backends:CVXOPTBackend",
    "cvxpy_backends:SDPABackend",
    "cvxpy_backends:ClarabelBackend",
    "cvxpy_backends:SCSBackend",
    "cvxpy_backends:MOSEKBackend",
    "chain:ChainBackend",
)
for _entry in BUILTIN:
    _module, _class = _entry.split(":")
    register_backend(getattr(importlib.import_module(f"{__name__}.{_module}"), _class))


def backend_class(backend) -> type[Backend]:
    """The registered class for a backend given as a name, a class or an instance."""
    if isinstance(backend, Backend):
        return type(backend)
    if isinstance(backend, type) and issubclass(backend, Backend):
        return backend
    key = str(backend).lower()
    if key not in REGISTRY:
        raise SolverError(f"unknown solver {backend!r}; valid: auto, {', '.join(REGISTRY)}")
    return REGISTRY[key]


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


def _installed() -> list[type[Backend]]:
    out = [cls for cls in REGISTRY.values() if cls.availability()[0]]
    if not out:
        hint = "; ".join(f"{n}: pip install {' '.join(c.REQUIRED_MODULES)}" for n, c in REGISTRY.items())
        raise SolverNotAvailableError(f"no SDP solver is installed ({hint})")
    return out


def _admits(cls: type[Backend], problem) -> bool:
    """The auto size window of ``cls`` (cheap: sizes only)."""
    order = problem.max_order
    return (cls.auto_rank is not None and cls.auto_min_order <= order <= cls.auto_max_order
            and min(len(lmi.blocks or [lmi.size]) for lmi in problem.lmis) >= cls.auto_min_blocks
            and (cls.auto_max_density == float("inf") or _density(problem) <= cls.auto_max_density))


def _density(problem) -> float:
    """Nonzeros of the term columns per order², the largest over the LMIs."""
    return max(sum(t.U.nnz for t in lmi.terms) / max(float(lmi.size) ** 2, 1.0) for lmi in problem.lmis)


def _auto_order(problem, installed: list[type[Backend]]) -> list[type[Backend]]:
    """Installed ranked backends whose window admits ``problem``, in auto order (a chordally
    decomposed problem goes first to those for which decomposition pays)."""
    ranked = [cls for cls in installed if _admits(cls, problem)]
    return sorted(ranked, key=lambda c: (not (problem.decomposed and c.decomposition_pays), c.auto_rank))


def _who_accepts(problem, installed: list[type[Backend]]) -> list[str]:
    return [cls.name for cls in installed if cls.accepts(problem)]


def choose_auto(problem) -> str:
    """Name of the backend ``solver="auto"`` uses for ``problem`` (read from the declarations)."""
    installed = _installed()
    for cls in _auto_order(problem, installed):
        if cls.accepts(problem):
            return cls.name
    # no ranked backend fits: any installed one that accepts the problem, accurate ones first
    for cls in sorted(installed, key=lambda c: not c.accurate):
        if cls.accepts(problem):
            return cls.name
    raise SolverError("no installed solver accepts this problem ("
                      + "; ".join(f"{c.name} needs {c.requires}" for c in installed if c.requires) + ")")


def candidates(problem, solver: str = "auto") -> list[Backend]:
    """The backends ``certify`` tries in turn on ``problem``.

    ``"auto"``: the auto choice, then the other ranked installed backends that admit and accept
    the problem, accurate (interior-point) ones first — each used only if the previous one
    returned no point or one that failed the independent check.  A name: that backend alone;
    :class:`~lipsdp.errors.SolverError` if it does not accept the problem, saying why and which
    installed solvers do.
    """
    if str(solver).lower() != "auto":
        backend = get_backend(solver)
        if not backend.accepts(problem):
            others = _who_accepts(problem, _installed())
            raise SolverError(
                f"solver {backend.name!r} cannot solve this problem: it needs "
                f"{backend.requires or 'a different problem structure'}; use solver='auto' or one of: "
                f"{', '.join(others) or 'none installed'}"
            )
        return [backend]
    first = choose_auto(problem)
    rest = [cls for cls in _auto_order(problem, _installed()) if cls.name != first and cls.accepts(problem)]
    rest.sort(key=lambda c: not c.accurate)  # stable: rank order within each group
    return [get_backend(first)] + [cls() for cls in rest]


def suggest_solvers(problem=None, exclude=(), limit: int = 3) -> str:
    """For messages that suggest another solver: up to ``limit`` installed backends (accepting
    ``problem`` when given) other than ``exclude``, accurate ones first, as ``"solver='a', 'b'
    or 'c'"``; ``"another solver"`` when there is none."""
    skip = {str(e).lower() for e in exclude}
    try:
        installed = _installed()
    except SolverNotAvailableError:
        installed = []
    names = [c.name for c in sorted(installed, key=lambda c: not c.accurate)
             if c.name not in skip and (problem is None or c.accepts(problem))][:limit]
    if not names:
        return "another solver"
    quoted = [f"'{n}'" for n in names]
    return "solver=" + (quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1])


#: compatibility view (read-only, built at import): (auto_max_order, name) of the ranked backends
#: without a minimum size, by rank.  ``choose_auto`` reads the class declarations, not this list.
AUTO_RULES: list[tuple[float, str]] = [
    (cls.auto_max_order, cls.name)
    for cls in sorted(REGISTRY.values(), key=lambda c: c.auto_rank if c.auto_rank is not None else 1 << 30)
    if cls.auto_rank is not None and not cls.auto_min_order and not cls.auto_min_blocks
]
