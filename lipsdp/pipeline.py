"""The certification pipeline: formulation → rewrites → solve-and-check → :class:`Certificate`.

    formulation.problem()            the LMI with its exact rewrites (lipsdp.reductions)
    chordal split (if it pays)       another rewrite, chosen with the backend
    memory guard                     the backend's memory model, before anything large is allocated
    solve, recover, check            each candidate backend in turn (auto: the choice, then the
                                     accurate fallbacks) until a point passes the independent check
    lower bound                      a real difference quotient (or exact value) for the gap

A bound is reported only as the checked ρ' of :mod:`lipsdp.check` (math.md §9); a point that fails
the check gives ``verified=False`` and a :class:`CertificationWarning`.  Questions made of several
SDPs (``Formulation.parts``) run the pipeline once per part and ``combine`` the certificates.
"""

from __future__ import annotations

import time
import warnings

from .backends import SolveOptions, candidates
from .certificate import Certificate, CertificationWarning
from .chordal import decompose_if
from .errors import LipSDPError, SolverError
from .memory import guard
from .options import CertifyOptions
from .progress import progress as _progress

__all__ = ["run"]


def run(form, opts: CertifyOptions) -> Certificate:
    """Certify the question ``form`` (a :class:`~lipsdp.formulations.Formulation`)."""
    parts = form.parts()
    if len(parts) != 1 or parts[0] is not form:
        return form.combine([run(p, opts) for p in parts])
    t_start = time.perf_counter()
    naive = form.naive_bound()
    timings = {"build": 0.0, "solve": 0.0, "check": 0.0}
    pb = _progress(opts.progress, desc="lipsdp certify")
    try:
        pb.stage("build")
        t0 = time.perf_counter()
        problem = form.problem()
        timings["build"] = time.perf_counter() - t0
        if not form.qcs or form.trivial() is not None:
            status, used, solver_bound = "optimal", "none", None
            pb.stage("check")
            t0 = time.perf_counter()
            chk = form.check(form.zero_point())
            timings["check"] += time.perf_counter() - t0
        else:
            problem, status, used, solver_bound, chk = _solve_and_check(form, problem, opts, timings, pb)
        trivial = form.trivial()
        if trivial is not None:
            bound = float(trivial)
        else:
            bound = form.bound_from_rho(chk.rho) if chk.verified else (solver_bound or float("nan"))
    except BaseException:
        pb.close(bound=None)  # never leave a progress bar open on an error
        raise
    pb.close(bound=float(bound) if chk.verified else None)

    lb, kind = None, None
    if opts.lower:
        try:
            lb, kind = form.lower_bound()
        except LipSDPError:
            raise
        except Exception as exc:  # never let the diagnostic lower bound hide the certificate
            warnings.warn(f"lower bound failed: {exc}", RuntimeWarning, stacklevel=3)
    timings["total"] = time.perf_counter() - t_start
    out = form.output
    cert = Certificate(
        bound=float(bound),
        verified=bool(chk.verified),
        naive_bound=float(naive),
        norm=form.norm,
        method=form.method,
        solver=used,
        status=status,
        lower_bound=None if lb is None else float(lb),
        lower_kind=kind,
        output=list(out) if isinstance(out, tuple) else (out.tolist() if hasattr(out, "tolist") else out),
        margin=float(chk.margin),
        solver_bound=solver_bound,
        optimal=status == "optimal",
        message=chk.message,
        timings=timings,
        sizes=dict(problem.sizes(), dims=form.dims()),
        network=form.describe(),
        rewrites=[step.name for step in problem.rewrites],
        region=form.region_info(),
    )
    if not cert.verified:
        warnings.warn(
            f"the bound {cert.bound:.6g} from solver {used} could NOT be verified ({chk.message}); "
            "do not use it as a certificate — try another solver or a tighter tolerance",
            CertificationWarning,
            stacklevel=3,
        )
    return cert


def _solve_and_check(form, problem, opts: CertifyOptions, timings: dict, pb):
    """Each candidate backend in turn until one's point passes the check (the last one's result
    is kept otherwise).  Returns (problem solved, status, backend name, solver bound, check)."""
    first = candidates(problem, opts.solver)[0]
    problem = decompose_if(problem, opts.decompose, first)
    backends = candidates(problem, opts.solver)
    guard(problem, backends[0], opts.memory_limit, form.check_order)
    pb.stage("solve")
    options = SolveOptions(tol=opts.tol, time_limit=opts.time_limit, verbose=opts.verbose)
    for i, b in enumerate(backends):
        last = i == len(backends) - 1
        res = b.solve(problem, options)
        timings["solve"] += res.seconds
        if res.theta is None:
            if not last:
                continue
            raise SolverError(
                f"solver {b.name} returned no point (status {res.status}: {res.message}); "
                "try another solver (lipsdp solvers lists them), or method='layer'"
            )
        rec = form.recover(problem, res.theta)
        solver_bound = form.bound_from_value(rec.rho_solver)
        pb.stage("check")
        t0 = time.perf_counter()
        chk = form.check(rec)
        # a backend may offer alternative points (slightly worse but more central iterates, which may
        # pass the rounding-safe test where the best one is too close to the boundary): each is
        # checked, the smallest checked ρ' wins
        for theta_c in res.extra.get("candidates", ()):
            chk_c = form.check(form.recover(problem, theta_c))
            if chk_c.verified and (not chk.verified or chk_c.rho < chk.rho):
                chk = chk_c
        timings["check"] += time.perf_counter() - t0
        if chk.verified or last:
            return problem, res.status, b.name, solver_bound, chk
    raise SolverError("no solver could be run on this problem")  # pragma: no cover - candidates is non-empty
