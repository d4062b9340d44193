"""A memory guard: estimate a solve's peak memory before running it, refuse when it won't fit.

Solvers that run out of memory on large SDPs are killed by the operating system without a
message (a dense-scaling interior point on a 600 × 600 LMI, a Schur-complement one on a
1 284 × 1 284 one).  :func:`estimate_memory` predicts the peak from the problem's sizes, in
8-byte doubles, as the sum of

- the backend's own model, declared by its class (``Backend.memory_doubles``, documented next to
  each backend in lipsdp.backends from solver facts, notes/anchors.md "Solver facts"), and
- the independent check: 7·n_c² for its dense order n_c = n_0 + N (M, |M|, −M(ρ'), |·|, the
  scaled copies and the Cholesky factor in lipsdp.check); for a wide LMI whose term columns are
  sparse (convolutions; the sparse proof of lipsdp.check_sparse) 18 × their nonzeros and F0's, the ratio
  of the proof's measured peak to the terms' nonzeros on conv LMIs of order 5 600–101 000
  (benchmarks/results-sparsecheck.md), whichever is smaller.

The formulas are order-of-magnitude guards (a factor ≈ 2 either way), not predictions to the
byte; they grow as documented (tests/test_memory.py).

:func:`guard` compares the estimate with ``memory_limit`` (default: 80% of the memory available
now — psutil, else /proc/meminfo MemAvailable, else sysconf; also capped by a cgroup limit) and
raises :class:`lipsdp.errors.MemoryLimitError` with concrete alternatives: the installed
backends whose estimate fits, a chordal split for the backends where it pays, smaller
formulations.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .backends import REGISTRY, ProblemStats, backend_class, installed_backends, problem_stats
from .check import SPARSE_PROOF_ORDER
from .errors import MemoryLimitError

__all__ = ["estimate_memory", "memory_breakdown", "available_memory", "default_memory_limit", "guard",
           "parse_bytes", "DEFAULT_FRACTION"]

#: fraction of the available memory used as the default limit
DEFAULT_FRACTION = 0.8
_D = 8  # bytes per double


def memory_breakdown(problem, backend, check_order: int | None = None) -> dict[str, float]:
    """Estimated bytes per component (the backend's declared model, and the independent check).

    ``backend``: a backend instance, class or registered name; ``problem``: an LMIProblem (or its
    :class:`~lipsdp.backends.ProblemStats`).
    """
    parts = dict(backend_class(backend).memory_doubles(problem))
    orders = problem.orders if isinstance(problem, ProblemStats) else [int(l.size) for l in problem.lmis]
    n_c = int(check_order) if check_order is not None else int(sum(orders))
    parts["check"] = 7.0 * float(n_c) ** 2
    if not isinstance(problem, ProblemStats) and n_c > SPARSE_PROOF_ORDER:
        nnz = float(sum(t.U.nnz for lmi in problem.lmis for t in lmi.terms) + sum(lmi.F0.nnz for lmi in problem.lmis))
        if nnz <= 0.05 * float(n_c) ** 2:  # the sparse proof: memory follows the fill
            parts["check"] = min(parts["check"], 18.0 * nnz + 10.0 * n_c)
    return {k: v * _D for k, v in parts.items()}


def estimate_memory(problem, backend, check_order: int | None = None) -> int:
    """Estimated peak bytes to solve ``problem`` with ``backend`` (instance, class or name) and
    check the result.

    ``check_order`` is the dense order of the independent check (n_0 + N for a feedforward
    network, before any input reduction); default: the sum of the LMI orders.
    """
    return int(sum(memory_breakdown(problem, backend, check_order).values()))


# ------------------------------------------------------------------------------------------
def _cgroup_room() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            lim = f.read().strip()
        if lim == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            cur = int(f.read().strip())
        return max(int(lim) - cur, 0)
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes of memory available now (None if it cannot be read)."""
    avail = None
    try:
        import psutil  # optional

        avail = int(psutil.virtual_memory().available)
    except Exception:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        if avail is None:
            try:
                avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
            except (ValueError, OSError, AttributeError):
                avail = None
    cg = _cgroup_room()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def default_memory_limit() -> int | None:
    a = available_memory()
    return None if a is None else int(DEFAULT_FRACTION * a)


_UNITS = {"": 1, "b": 1, "k": 2 ** 10, "kb": 2 ** 10, "m": 2 ** 20, "mb": 2 ** 20, "g": 2 ** 30, "gb": 2 ** 30,
          "t": 2 ** 40, "tb": 2 ** 40, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_bytes(value) -> float:
    """A memory size: a number of bytes, or a string such as ``"8GB"`` / ``"512 MiB"``."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if not value > 0:
            raise MemoryLimitError(f"memory_limit must be a positive number of bytes (or a string like '8GB'), got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _UNITS:
            return float(m.group(1)) * _UNITS[m.group(2).lower()]
    raise MemoryLimitError(
        f"memory_limit: expected a positive number of bytes, a string like '8GB', or None (default: "
        f"{int(DEFAULT_FRACTION * 100)}% of the available RAM), got {value!r}"
    )


def _gb(x: float) -> str:
    return f"{x / 2 ** 30:.3g} GiB"


def _decomposed_stats(problem, s: ProblemStats) -> ProblemStats | None:
    """Sizes of the chordal decomposition of ``problem`` (lipsdp.chordal), without building it;
    None when it does not split."""
    from .chordal import block_graph, chordal_cliques

    orders, extra = [], 0
    for lmi in problem.lmis:
        p, edges, _ = block_graph(lmi)
        cl, tree = chordal_cliques(p, edges)
        orders += [sum(lmi.blocks[b] for b in c) for c in cl]
        for a, b in tree:
            sz = sum(lmi.blocks[k] for k in set(cl[a]) & set(cl[b]))
            extra += sz * (sz + 1) // 2
    if len(orders) <= len(problem.lmis):
        return None
    return ProblemStats(s.m + extra, tuple(orders), s.nnz + 2 * extra, s.R + 2 * extra)


def guard(problem, backend, memory_limit=None, check_order: int | None = None) -> int:
    """Raise :class:`MemoryLimitError` if the estimate exceeds the limit; return the estimate.

    ``backend``: a backend instance, class or registered name.  ``memory_limit``: None (default:
    80% of the available memory; no guard if that cannot be read), a number of bytes, a string
    like ``"8GB"``, or ``float("inf")`` to disable.
    """
    cls = backend_class(backend)
    est = estimate_memory(problem, cls, check_order)
    if memory_limit is None:
        limit = default_memory_limit()
        what = f"{int(DEFAULT_FRACTION * 100)}% of the available memory"
        if limit is None:
            return est
    else:
        limit = parse_bytes(memory_limit)
        what = "memory_limit"
    if est <= limit:
        return est
    s = problem_stats(problem)
    parts = memory_breakdown(problem, cls, check_order)
    tips = []
    try:
        installed = installed_backends()
    except Exception:
        installed = []
    try:
        dec = _decomposed_stats(problem, s)
        if dec is not None:
            splitters = [n for n in installed if REGISTRY[n].decomposition_pays]
            for name in splitters:
                alt_b = _D * sum(REGISTRY[name].memory_doubles(dec).values()) + parts["check"]
                if alt_b <= limit:
                    tips.append(f"decompose=True with solver={name!r} (chordal cliques of order ≤ {max(dec.orders)}, "
                                f"≈ {_gb(alt_b)})")
                    break
            else:
                tips.append(f"decompose=True (chordal cliques of order ≤ {max(dec.orders)}; still above the limit "
                            f"with {', '.join(splitters) or 'the solvers for which it pays'})")
    except Exception:  # the suggestion is best-effort; never hide the real error
        pass
    for name in installed:
        if name == cls.name:
            continue
        try:
            e2 = estimate_memory(problem, name, check_order)
        except Exception:  # a backend whose model needs more than the sizes: no suggestion
            continue
        if e2 <= limit:
            tips.append(f"solver={name!r} (≈ {_gb(e2)})")
    tips.append("method='layer' (one multiplier per layer instead of one per neuron)")
    tips.append("output=<logit index> (a scalar output makes the last block rank 1)")
    tips.append("memory_limit=<bytes or '16GB'> if you know the machine has more room")
    detail = ", ".join(f"{k} {_gb(v)}" for k, v in parts.items())
    raise MemoryLimitError(
        f"the {cls.name} solve would need about {_gb(est)} ({detail}) for LMI order(s) "
        f"{list(s.orders[:6])}{'…' if len(s.orders) > 6 else ''} with {s.m} multipliers, more than the "
        f"limit {_gb(limit)} ({what}); nothing was solved. Try: " + "; ".join(tips)
    )
