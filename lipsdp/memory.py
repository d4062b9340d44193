"""A memory guard: estimate a solve's peak memory before running it, refuse when it won't fit.

Solvers that run out of memory on large SDPs are killed by the operating system without a
message (Clarabel on a 600 × 600 LMI, SDPA on a 1 284 × 1 284 one).  :func:`estimate_memory`
predicts the peak from the problem's sizes with one formula per backend, taken from documented
solver facts (notes/anchors.md, "Solver facts"), in 8-byte doubles:

=================  ============================================================================
backend            dominant storage
=================  ============================================================================
clarabel           Σ_cones (k(k+1)/2)² ≈ k⁴/4 per PSD cone of order k (dense scaling block in
                   its KKT system), + the cvxpy canonicalisation
cvxopt/sdpa/mosek  m² (dense Schur complement / Newton matrix, m multipliers) + m·Σ_j n_j²
                   (the scaled data F_i, one n_j × n_j block per cone j), + cvxpy
scs                2·nnz(A) (A and its factorised KKT) + 3·Σ_j n_j² (eigendecomposition
                   workspace per cone), + cvxpy
native             4·R² + 3·Σ_j n_j² (R = total columns of the U_i: the P, Q, R, H matrices of
                   math.md §10, and the dense S = (−M)^{-1} with its factor)
chain              30·Σ_k b_k² + 10·R·b_max over the coordinate blocks b_k (band of S, of
                   S^{-1} and their derivatives; the U columns restricted to two blocks) —
                   linear in depth, no dense n × n matrix
cvxpy (all above   6·nnz(A) + 2·Σ_j n_j² (sparse data with indices, copied by its reductions,
but native)        and the dense vec(F0))
check              7·n_c² for the independent check's dense order n_c = n_0 + N (M, |M|,
                   −M(ρ'), |·|, the scaled copies and the Cholesky factor in lipsdp.check)
=================  ============================================================================

nnz(A) is bounded by Σ_i r_i², r_i the number of nonzero rows of U_i (exact for rank-≤2 terms
up to cancellation).  The formulas are order-of-magnitude guards (a factor ≈ 2 either way),
not predictions to the byte; they grow as documented (tests/test_memory.py).

:func:`guard` compares the estimate with ``memory_limit`` (default: 80% of the memory available
now — psutil, else /proc/meminfo MemAvailable, else sysconf; also capped by a cgroup limit) and
raises :class:`lipsdp.errors.MemoryLimitError` with concrete alternatives.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .errors import MemoryLimitError

__all__ = ["estimate_memory", "memory_breakdown", "available_memory", "default_memory_limit", "guard",
           "parse_bytes", "DEFAULT_FRACTION"]

#: fraction of the available memory used as the default limit
DEFAULT_FRACTION = 0.8
_D = 8  # bytes per double
_SCHUR = ("cvxopt", "sdpa", "mosek")


def _stats(problem) -> dict:
    orders = [int(l.size) for l in problem.lmis]
    nnz = 0
    cols = 0
    for lmi in problem.lmis:
        for t in lmi.terms:
            U = t.U
            r = len(np.unique(U.tocsc().indices)) if hasattr(U, "tocsc") else int(np.count_nonzero(np.any(U, axis=1)))
            nnz += r * r
            cols += int(U.shape[1])
        nnz += int(lmi.F0.nnz)
    blocks = [int(b) for l in problem.lmis for b in (l.blocks or [l.size])]
    return {"m": int(problem.n_vars), "orders": orders, "nnz": int(nnz), "R": int(cols), "blocks": blocks}


def _solver_doubles(name: str, m: int, orders, nnz: int, R: int, blocks=()) -> dict[str, float]:
    sq = float(sum(float(k) ** 2 for k in orders))
    out: dict[str, float] = {}
    if name == "chain" and blocks:
        out["chain"] = 30.0 * float(sum(float(b) ** 2 for b in blocks)) + 10.0 * float(R) * float(max(blocks))
        return out
    if name == "native":
        out["native"] = 4.0 * float(R) ** 2 + 3.0 * sq
        return out
    if name == "clarabel":
        out["clarabel"] = float(sum((k * (k + 1) / 2.0) ** 2 for k in orders))
    elif name in _SCHUR:
        out[name] = float(m) ** 2 + float(m) * sq
    elif name == "scs":
        out["scs"] = 2.0 * nnz + 3.0 * sq
    else:  # unknown backend: the most conservative of the documented ones
        out[name] = max(float(m) ** 2 + float(m) * sq, 2.0 * nnz + 3.0 * sq)
    out["cvxpy"] = 6.0 * nnz + 2.0 * sq
    return out


def memory_breakdown(problem, solver_name: str, check_order: int | None = None) -> dict[str, float]:
    """Estimated bytes per component (solver, cvxpy canonicalisation, independent check)."""
    s = _stats(problem)
    parts = _solver_doubles(str(solver_name).lower(), s["m"], s["orders"], s["nnz"], s["R"], s["blocks"])
    n_c = int(check_order) if check_order is not None else int(sum(s["orders"]))
    parts["check"] = 7.0 * float(n_c) ** 2
    return {k: v * _D for k, v in parts.items()}


def estimate_memory(problem, solver_name: str, check_order: int | None = None) -> int:
    """Estimated peak bytes to solve ``problem`` with ``solver_name`` and check the result.

    ``check_order`` is the dense order of the independent check (n_0 + N for a feedforward
    network, before any input reduction); default: the sum of the LMI orders.
    """
    return int(sum(memory_breakdown(problem, solver_name, check_order).values()))


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


def guard(problem, solver_name: str, memory_limit=None, check_order: int | None = None) -> int:
    """Raise :class:`MemoryLimitError` if the estimate exceeds the limit; return the estimate.

    ``memory_limit``: None (default: 80% of the available memory; no guard if that cannot be
    read), a number of bytes, a string like ``"8GB"``, or ``float("inf")`` to disable.
    """
    est = estimate_memory(problem, solver_name, check_order)
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
    s = _stats(problem)
    parts = memory_breakdown(problem, solver_name, check_order)
    tips = []
    try:
        from .chordal import block_graph, chordal_cliques

        orders, extra = [], 0
        for lmi in problem.lmis:
            p, edges, _ = block_graph(lmi)
            cl, tree = chordal_cliques(p, edges)
            orders += [sum(lmi.blocks[b] for b in c) for c in cl]
            for a, b in tree:
                sz = sum(lmi.blocks[k] for k in set(cl[a]) & set(cl[b]))
                extra += sz * (sz + 1) // 2
        if len(orders) > len(problem.lmis):
            for name in ("scs", "clarabel"):
                alt = _solver_doubles(name, s["m"] + extra, orders, s["nnz"] + 2 * extra, s["R"] + 2 * extra)
                alt_b = _D * sum(alt.values()) + parts["check"]
                if alt_b <= limit:
                    tips.append(f"decompose=True with solver={name!r} (chordal cliques of order ≤ {max(orders)}, "
                                f"≈ {_gb(alt_b)})")
                    break
            else:
                tips.append(f"decompose=True (chordal cliques of order ≤ {max(orders)}; still above the limit "
                            "with the cone solvers)")
    except Exception:  # the suggestion is best-effort; never hide the real error
        pass
    try:
        from .backends import installed_backends

        names = [n for n in installed_backends() if n != str(solver_name).lower()]
    except Exception:
        names = []
    for name in names:
        e2 = estimate_memory(problem, name, check_order)
        if e2 <= limit:
            tips.append(f"solver={name!r} (≈ {_gb(e2)})")
    tips.append("method='layer' (one multiplier per layer instead of one per neuron)")
    tips.append("output=<logit index> (a scalar output makes the last block rank 1)")
    tips.append("memory_limit=<bytes or '16GB'> if you know the machine has more room")
    detail = ", ".join(f"{k} {_gb(v)}" for k, v in parts.items())
    raise MemoryLimitError(
        f"the {solver_name} solve would need about {_gb(est)} ({detail}) for LMI order(s) "
        f"{s['orders'][:6]}{'…' if len(s['orders']) > 6 else ''} with {s['m']} multipliers, more than the "
        f"limit {_gb(limit)} ({what}); nothing was solved. Try: " + "; ".join(tips)
    )
