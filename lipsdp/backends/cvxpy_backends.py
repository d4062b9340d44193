"""Conic solvers through cvxpy: SCS, Clarabel, CVXOPT, SDPA and (licensed) MOSEK.

The LMI problem is handed to cvxpy in one affine expression per LMI,
``reshape(vec(F0) + F θ, (n, n)) ⪯ 0`` with F the sparse matrix of vec(U_i C_i U_i^T), which
keeps cvxpy's canonicalisation cheap (no per-multiplier expression tree).

Memory models (:meth:`memory_doubles`, 8-byte doubles; documented solver facts, notes/anchors.md
"Solver facts"; order-of-magnitude guards, a factor ≈ 2 either way).  m multipliers, n_j the
PSD cone orders, nnz ≤ Σ_i r_i² (r_i nonzero rows of U_i) + nnz(F0):

- cvxpy canonicalisation, every backend here: 6·nnz + 2·Σ_j n_j² (sparse data with indices,
  copied by its reductions, and the dense vec(F0));
- Schur-complement interior points (CVXOPT, SDPA, MOSEK): m² + m·Σ_j n_j² (dense Newton matrix,
  and the scaled data, one n_j × n_j block per cone);
- Clarabel: Σ_j (n_j(n_j+1)/2)² ≈ n⁴/4 per cone (dense scaling block in its KKT system);
- SCS: 2·nnz + 3·Σ_j n_j² (A and its factorised KKT, eigendecomposition workspace per cone).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings

import numpy as np

from .base import Backend, ProblemStats, SolveOptions, SolveResult, problem_stats

__all__ = ["CvxpyBackend", "SCSBackend", "ClarabelBackend", "CVXOPTBackend", "SDPABackend", "MOSEKBackend"]


class CvxpyBackend(Backend):
    CVXPY_NAME: str = ""
    REQUIRED_MODULES = ("cvxpy",)

    @classmethod
    def solver_doubles(cls, s: ProblemStats) -> float:
        """The solver's own peak storage (default: a Schur-complement interior point)."""
        return float(s.m) ** 2 + float(s.m) * s.sum_sq

    @classmethod
    def memory_doubles(cls, problem) -> dict[str, float]:
        s = problem_stats(problem)
        return {cls.name: cls.solver_doubles(s), "cvxpy": 6.0 * s.nnz + 2.0 * s.sum_sq}

    def solver_kwargs(self, options: SolveOptions) -> dict:  # pragma: no cover - per solver
        return {}

    def solve(self, problem, options: SolveOptions) -> SolveResult:
        import cvxpy as cp

        theta = cp.Variable(problem.n_vars)
        cons = []
        if problem.nonneg.any():
            cons.append(theta[np.flatnonzero(problem.nonneg)] >= 0)
        for lmi in problem.lmis:
            n = lmi.size
            F = lmi.term_matrices()
            cols = np.array([t.var for t in lmi.terms])
            # sum duplicated columns of the same variable: F θ_sub with selection
            import scipy.sparse as sp

            Sel = sp.csc_matrix((np.ones(len(cols)), (np.arange(len(cols)), cols)), shape=(len(cols), problem.n_vars))
            A = (F @ Sel).tocsc()
            f0 = np.asarray(lmi.F0.toarray(order="F")).ravel(order="F")
            expr = cp.reshape(f0 + A @ theta, (n, n), order="F")
            cons.append(-expr >> 0)
        prob = cp.Problem(cp.Minimize(problem.c @ theta), cons)
        t0 = time.perf_counter()
        status, msg = "error", ""
        try:
            with warnings.catch_warnings(), _quiet_stdout(not options.verbose):
                warnings.simplefilter("ignore")
                prob.solve(solver=self.CVXPY_NAME, verbose=options.verbose, **self.solver_kwargs(options))
            status = _STATUS.get(prob.status, "error")
        except cp.error.SolverError as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        except Exception as exc:  # solver crashed inside: report, never leak its traceback
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        seconds = time.perf_counter() - t0
        value = theta.value
        iters = None
        try:
            iters = prob.solver_stats.num_iters
        except Exception:
            pass
        return SolveResult(
            status=status if value is not None or status not in ("optimal", "optimal_inaccurate") else "error",
            theta=None if value is None else np.asarray(value, dtype=float),
            objective=None if prob.value is None else float(prob.value),
            seconds=seconds,
            iterations=iters,
            message=msg or str(prob.status),
        )


@contextlib.contextmanager
def _quiet_stdout(active: bool):
    """Silence C-level prints of native solvers (SDPA writes to fd 1) unless verbose."""
    if not active:
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (some notebook front ends)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_STATUS = {
    "optimal": "optimal",
    "optimal_inaccurate": "optimal_inaccurate",
    "infeasible": "infeasible",
    "infeasible_inaccurate": "infeasible",
    "unbounded": "unbounded",
    "unbounded_inaccurate": "unbounded",
    "user_limit": "time_limit",
}


class SCSBackend(CvxpyBackend):
    name = "scs"
    CVXPY_NAME = "SCS"
    REQUIRED_MODULES = ("cvxpy", "scs")
    description = "first-order splitting (SCS); fast per iteration, low accuracy — always checked"
    licence = "MIT"
    exploits = ("cone-order", "sparse data")
    decomposition_pays = True
    auto_rank = 3  # last resort after the accurate ones (first-order: low accuracy)

    @classmethod
    def solver_doubles(cls, s):
        return 2.0 * s.nnz + 3.0 * s.sum_sq

    def solver_kwargs(self, o):
        kw = {"eps_abs": o.tol, "eps_rel": o.tol, "max_iters": o.max_iters or 200000}
        if o.time_limit:
            kw["time_limit_secs"] = float(o.time_limit)
        return kw


class ClarabelBackend(CvxpyBackend):
    name = "clarabel"
    CVXPY_NAME = "CLARABEL"
    REQUIRED_MODULES = ("cvxpy", "clarabel")
    description = "interior point (Clarabel); accurate, dense PSD scaling: slow beyond ~100×100 blocks"
    licence = "Apache-2.0"
    exploits = ("cone-order",)
    decomposition_pays = True
    accurate = True

    @classmethod
    def solver_doubles(cls, s):
        return float(sum((k * (k + 1) / 2.0) ** 2 for k in s.orders))

    def solver_kwargs(self, o):
        kw = {"tol_gap_abs": o.tol, "tol_gap_rel": o.tol, "tol_feas": o.tol}
        if o.max_iters:
            kw["max_iter"] = o.max_iters
        if o.time_limit:
            kw["time_limit"] = float(o.time_limit)
        return kw


class CVXOPTBackend(CvxpyBackend):
    name = "cvxopt"
    CVXPY_NAME = "CVXOPT"
    REQUIRED_MODULES = ("cvxpy", "cvxopt")
    description = "interior point (CVXOPT); accurate at small and mid sizes"
    licence = "GPL-3.0-or-later"
    accurate = True

    def solver_kwargs(self, o):
        return {"abstol": o.tol, "reltol": o.tol, "feastol": o.tol, "max_iters": o.max_iters or 100}


class SDPABackend(CvxpyBackend):
    name = "sdpa"
    CVXPY_NAME = "SDPA"
    REQUIRED_MODULES = ("cvxpy", "sdpap")
    description = "interior point (SDPA via sdpa-python); accurate at mid sizes"
    licence = "GPL-2.0"
    accurate = True
    auto_rank = 2  # first accurate fallback after the native solver

    def solver_kwargs(self, o):
        kw = {"epsilonStar": o.tol, "epsilonDash": o.tol}
        if o.max_iters:
            kw["maxIteration"] = o.max_iters
        return kw


class MOSEKBackend(CvxpyBackend):
    name = "mosek"
    CVXPY_NAME = "MOSEK"
    REQUIRED_MODULES = ("cvxpy", "mosek")
    description = "interior point (MOSEK); needs a licence"
    licence = "proprietary (MOSEK licence required)"
    accurate = True

    @classmethod
    def availability(cls):
        ok, why = super().availability()
        if not ok:
            return ok, why
        try:
            import mosek

            with mosek.Env() as env:
                env.checkoutlicense(mosek.feature.pts)
        except Exception as exc:  # mosek.Error without a licence
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return False, (
                f"MOSEK is installed but has no usable licence ({first[:160]}); "
                "put a licence at ~/mosek/mosek.lic or set MOSEKLM_LICENSE_FILE, or use another solver"
            )
        return True, ""

    def solver_kwargs(self, o):
        params = {"MSK_DPAR_INTPNT_CO_TOL_REL_GAP": o.tol, "MSK_DPAR_INTPNT_CO_TOL_PFEAS": o.tol,
                  "MSK_DPAR_INTPNT_CO_TOL_DFEAS": o.tol}
        if o.time_limit:
            params["MSK_DPAR_OPTIMIZER_MAX_TIME"] = float(o.time_limit)
        return {"mosek_params": params}
