"""The public entry point: :func:`certify` and the :class:`Certificate` it returns."""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from os import PathLike

import numpy as np

from . import __version__
from .backends import SolveOptions, candidates
from .errors import FormulationError, InvalidNetworkError, LipSDPError, SolverError
from .formulations import formulation_for
from .ir import Network

__all__ = ["certify", "Certificate", "as_network", "CertificationWarning"]

NORMS = ("l2", "linf")


class CertificationWarning(UserWarning):
    """Emitted when a bound could not be verified independently."""


@dataclass
class Certificate:
    """A checked upper bound on the Lipschitz constant.

    ``bound`` is the value that passed the independent float64 check (lipsdp.check) — or, when
    ``verified`` is False, the solver's unverified value, which must not be used as a bound.
    """

    bound: float
    verified: bool
    naive_bound: float
    norm: str
    method: str
    solver: str
    status: str
    lower_bound: float | None = None
    output: object = None
    margin: float = float("nan")
    solver_bound: float | None = None
    optimal: bool = True
    message: str = ""
    timings: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    network: str = ""
    version: str = __version__
    per_output: list | None = None  # ℓ∞ without ``output``: one checked bound per logit

    @property
    def gap(self) -> float | None:
        """Relative gap (upper − lower) / lower, when a lower bound is known."""
        if self.lower_bound is None or not self.lower_bound:
            return None
        return (self.bound - self.lower_bound) / self.lower_bound

    def to_dict(self) -> dict:
        d = asdict(self)
        out = d.get("output")
        if isinstance(out, np.ndarray):
            d["output"] = out.tolist()
        d["gap"] = self.gap
        return _jsonable(d)

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def rows(self) -> list[tuple[str, str]]:
        def f(x):
            return "—" if x is None else f"{x:.6g}"

        return [
            ("network", self.network),
            ("norm / method", f"{self.norm} / {self.method}" + ("" if self.output is None else f" (output {self.output})")),
            ("certified bound", f(self.bound) + ("" if self.verified else "  (NOT VERIFIED)")),
            ("naive bound (product of norms)", f(self.naive_bound)),
            ("lower bound (sampled)", f(self.lower_bound)),
            ("gap upper/lower", "—" if self.gap is None else f"{100 * self.gap:.3g} %"),
            ("solver / status", f"{self.solver} / {self.status}" + ("" if self.optimal else " (not optimal)")),
            ("verified", "yes" if self.verified else "NO — " + self.message),
            ("time (build / solve / check)",
             " / ".join(f"{self.timings.get(k, 0.0):.3g} s" for k in ("build", "solve", "check"))),
        ]

    def plot(self, ax=None, **kw):
        """Plot [lower, upper] against the naive bound (:func:`lipsdp.plot.compare`)."""
        from .plot import compare

        return compare(self, ax=ax, **kw)

    def _repr_html_(self) -> str:
        from .report import certificate_table_html

        return certificate_table_html(self)

    def __str__(self):
        rows = self.rows()
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def as_network(model, input_shape=None, activation: str = "relu", allow_pickle: bool = False) -> Network:
    """Accept a :class:`Network`, a weight-file path, a list of weight matrices or a torch module."""
    if isinstance(model, Network):
        return model
    if isinstance(model, (str, PathLike)):
        from .io import load

        return load(model, activation=activation, allow_pickle=allow_pickle)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from .models.export import from_torch

        return from_torch(model, input_shape=input_shape)
    if isinstance(model, (list, tuple)):
        from .io import from_weights

        return from_weights(model, activation=activation)
    raise InvalidNetworkError(
        f"cannot certify a {type(model).__name__}: expected a torch nn.Module, a lipsdp Network, "
        "a weight-file path (.mat/.npz/.pt) or a list of weight matrices"
    )


def certify(
    model,
    norm: str = "l2",
    method: str = "neuron",
    solver: str = "auto",
    input_shape=None,
    output=None,
    lower: bool = True,
    tol: float = 1e-8,
    time_limit: float | None = None,
    verbose: bool = False,
    activation: str = "relu",
    allow_pickle: bool = False,
    progress: bool | None = None,
    decompose="auto",
    memory_limit=None,
) -> Certificate:
    """Certify an upper bound on the Lipschitz constant of ``model``.

    Parameters
    ----------
    model: torch ``nn.Module``, :class:`lipsdp.Network`, weight-file path or list of matrices.
    norm: ``"l2"`` (ℓ2 → ℓ2) or ``"linf"`` (ℓ∞ → |·| of a scalar output).
    method: ``"neuron"`` (default; LipSDP-Neuron / full LipSDP-NSR), ``"layer"`` (LipSDP-Layer /
        NSR chain) or ``"chain"``.  ``"network"`` is refused: it is unsound (math.md §2).
    solver: ``"auto"`` or a backend name (``lipsdp.backends.installed_backends()``).
    output: None (all outputs), an int (one logit) or a vector c (the margin c^T f).
    lower: also compute a sampled lower bound (cheap) to report the gap.
    tol, time_limit, verbose: passed to the solver.
    activation, allow_pickle: used when ``model`` is a weight file (see :func:`lipsdp.load`).
    decompose: ``"auto"`` (default), True or False — solve the exact chordal decomposition of the
        LMI (:mod:`lipsdp.chordal`, math.md §3; same optimum); auto = only where it pays.
    memory_limit: bytes (or ``"8GB"``); the estimated peak memory (:mod:`lipsdp.memory`) above it
        raises :class:`~lipsdp.errors.MemoryLimitError` before solving.  None: 80% of the free RAM.
    progress: show stage / iteration / checked bound (tqdm); None = only when interactive.

    Returns a :class:`Certificate` whose ``bound`` passed the independent float64 check
    (``verified=True``); otherwise ``verified=False`` and a :class:`CertificationWarning`.
    """
    t_start = time.perf_counter()
    if norm not in NORMS:
        raise FormulationError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if hasattr(model, "W") and hasattr(model, "U") and hasattr(model, "C"):  # implicit model (duck-typed)
        from .formulations.implicit import certify_implicit

        return certify_implicit(model, norm=norm, method=method, solver=solver, lower=lower, tol=tol,
                                time_limit=time_limit, verbose=verbose)
    net = as_network(model, input_shape=input_shape, activation=activation, allow_pickle=allow_pickle)
    if norm == "linf" and output is None and net.output_dim > 1:
        from .formulations.linf import certify_all_outputs

        return certify_all_outputs(certify, net, net.output_dim, norm=norm, method=method, solver=solver,
                                   lower=lower, tol=tol, time_limit=time_limit, verbose=verbose)
    form = formulation_for(net, norm, method, output)
    naive = form.naive_bound()
    options = SolveOptions(tol=tol, time_limit=time_limit, verbose=verbose)
    timings = {"build": 0.0, "solve": 0.0, "check": 0.0}
    from .progress import progress as _progress

    pb = _progress(progress, desc="lipsdp certify")
    try:
        pb.stage("build")
        t0 = time.perf_counter()
        problem = form.problem()
        timings["build"] = time.perf_counter() - t0
        # the backends to try in turn (solver="auto": the auto choice, then fallbacks when one returns
        # no point or an unverifiable one); re-chosen for the decomposed problem if it is split
        tries = candidates(problem, solver)
        from .chordal import decompose_if

        decomposed = decompose_if(problem, decompose, tries[0])
        if decomposed is not problem:
            problem, tries = decomposed, candidates(decomposed, solver)
        backend = tries[0]

        if not form.qcs or form.trivial() is not None:
            from .formulations import Recovered

            rec = Recovered([{p.name: np.zeros(p.size) for p in qc.params()} for qc in form.qcs], 0.0)
            status, solver_bound, used = "optimal", None, "none"
        else:
            from .memory import guard

            guard(problem, backend.name, memory_limit, sum(W.shape[1] for W in form.Ws) if hasattr(form, "Ws") else None)
            pb.stage("solve")
            for i, b in enumerate(tries):
                last = i == len(tries) - 1
                res = b.solve(problem, options)
                timings["solve"] += res.seconds
                status, used = res.status, b.name
                if res.theta is None:
                    if not last:
                        continue
                    raise SolverError(
                        f"solver {b.name} returned no point (status {res.status}: {res.message}); "
                        "try another solver (solver='scs' or 'sdpa'), or method='layer'"
                    )
                rec = form.recover(problem, res.theta)
                solver_bound = form.bound_from_value(rec.rho_solver) if hasattr(form, "bound_from_value") else \
                    float(math.sqrt(max(rec.rho_solver, 0.0)))
                t0 = time.perf_counter()
                chk = form.check(rec)
                # a backend may offer alternative points (the native solver: slightly worse but more
                # central iterates, which may pass the rounding-safe test where the best one is too
                # close to the boundary, or a re-solve): each is checked, the smallest checked wins
                for theta_c in res.extra.get("candidates", ()):
                    rec_c = form.recover(problem, theta_c)
                    chk_c = form.check(rec_c)
                    if chk_c.verified and (not chk.verified or chk_c.rho < chk.rho):
                        rec, chk = rec_c, chk_c
                timings["check"] += time.perf_counter() - t0
                if chk.verified or last:
                    break

        pb.stage("check")
        t0 = time.perf_counter()
        if not form.qcs or form.trivial() is not None:
            chk = form.check(rec)
        timings["check"] += time.perf_counter() - t0
        if form.trivial() == 0.0:
            bound = 0.0
        else:
            bound = form.bound_from_rho(chk.rho) if chk.verified else (solver_bound or float("nan"))
    except BaseException:
        pb.close(bound=None)  # never leave a progress bar open on an error
        raise
    pb.close(bound=float(bound) if chk.verified else None)

    lb = None
    if lower:
        try:
            from .lower import lower_bound

            lb = float(lower_bound(net, norm=norm, output=output))
        except LipSDPError:
            raise
        except Exception as exc:  # never let the diagnostic lower bound hide the certificate
            warnings.warn(f"lower bound failed: {exc}", RuntimeWarning, stacklevel=2)
    timings["total"] = time.perf_counter() - t_start
    cert = Certificate(
        bound=float(bound),
        verified=bool(chk.verified),
        naive_bound=float(naive),
        norm=norm,
        method=method,
        solver=used,
        status=status,
        lower_bound=lb,
        output=output.tolist() if isinstance(output, np.ndarray) else output,
        margin=float(chk.margin),
        solver_bound=solver_bound,
        optimal=status == "optimal",
        message=chk.message,
        timings=timings,
        sizes=dict(problem.sizes(), dims=[int(d) for d in net.dims] if net.is_feedforward else []),
        network=repr(net),
    )
    if not cert.verified:
        warnings.warn(
            f"the bound {cert.bound:.6g} from solver {used} could NOT be verified ({chk.message}); "
            "do not use it as a certificate — try another solver or a tighter tolerance",
            CertificationWarning,
            stacklevel=2,
        )
    return cert
