"""The chain solver's iteration: log-barrier path following with matrix-free Newton-CG steps.

For the problem  min c^T θ  s.t.  S(θ) = −F(θ) ≻ 0,  θ[nonneg] ≥ 0  (see the package docstring),
it follows the central path of

    f_μ(θ) = c^T θ / μ − log det S(θ) − Σ_{bounded} log(θ_i − lo_i) − Σ log(hi_i − θ_i)

(lo = 0 on the nonneg multipliers; a wide box |θ_i| ≤ BOX · max θ_start on the free ones).  The
box is not part of the problem: MaxMin's γ = −τ is a recession direction that adds a PSD rank-one
term, along which the barrier alone is unbounded and the iterates would drift too far for the
check's rounding test.  One Newton step (:meth:`ChainBackend._solve`, cut into the steps below):

1. *model* at θ: band of Σ = S^{-1} (band.py), gradient c/μ + tr(A_i Σ) + (bound terms),
   preconditioner (precond.py) and the Hessian-vector product (H v)_i = tr(A_i Σ A(v) Σ) + (bound
   terms);
2. *direction*: preconditioned CG on H d = −g to relative residual CG_TOL.  When the Newton
   decrement² λ² = −g^T d ≤ CENTRED, θ is centred for μ: μ ← σ μ (σ from SIGMA_MIN to 0.5,
   adapted to the steps the last stage took).  Right after a reduction the decrement gives
   ν_eff = c^T H^{-1} c / μ² (≤ ν, the slope of the central path's objective in μ);
3. *stop* when ν_eff μ ≤ tol · |c^T θ| or ν μ ≤ tol · |c^T θ| (tol = max(options.tol, MIN_GAP);
   status ``"optimal"``), or on ``time_limit`` / ``max_iters`` (status ``"time_limit"``);
4. *line search*: Armijo backtracking on f_μ from the fraction-to-boundary step in S's own metric,
   S(θ + a d) ⪰ (1 − FRAC) S (λ_max(L^{-1} A(d) L^{-T}) by Lanczos on the block factors; FRAC of
   the way to the bounds likewise).  A point is accepted only after a successful block Cholesky of
   S, so every iterate is strictly feasible.

Guarantee: the returned θ is strictly feasible — on a stop, the lowest-objective iterate so far —
and :meth:`ChainBackend._safeguard` keeps −F(θ) a rounding-level margin inside the cone (the
independent check's requirement, math.md §9), tested by the block Cholesky after diagonal scaling.
The caller's check (lipsdp.check) decides whether it is a certificate.  The measurements behind
the box and the first trial step: benchmarks/results-chain.md.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from ..base import Backend, SolveOptions, SolveResult
from .band import _Chain, _Layout, _max_growth, factor_all, homes_vars
from .precond import _hess_blocks, _lowrank_factor, _pcg, _Precond, _small_eigs, feasible_start, var_homes

__all__ = ["ChainBackend"]


def _single_thread():
    """The recursions multiply many small (w × w) matrices: one BLAS thread is faster (and does not
    fight other processes for the cores).  threadpoolctl is optional."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing
        return contextlib.nullcontext()


class _Bounds:
    """θ ≥ lo and θ ≤ hi where finite (θ[nonneg] ≥ 0, the box on the free variables), and their
    logarithmic barrier."""

    def __init__(self, n_vars, nn, free, radius):
        lo = np.full(n_vars, -np.inf)
        hi = np.full(n_vars, np.inf)
        lo[nn] = 0.0
        hi[free] = radius
        lo[free] = -radius
        self.lo, self.hi = lo, hi
        self.bl, self.bh = np.flatnonzero(np.isfinite(lo)), np.flatnonzero(np.isfinite(hi))

    @property
    def count(self) -> int:
        return len(self.bl) + len(self.bh)

    def log_sum(self, th) -> float:
        """Σ log(θ_i − lo_i) + Σ log(hi_i − θ_i)."""
        lo, hi, bl, bh = self.lo, self.hi, self.bl, self.bh
        return float(np.sum(np.log(th[bl] - lo[bl]))) + float(np.sum(np.log(hi[bh] - th[bh])))

    def gradient(self, theta, g):
        """g plus the bound terms' gradient, and the bound terms' (diagonal) Hessian."""
        lo, hi, bl, bh = self.lo, self.hi, self.bl, self.bh
        gb = g.copy()
        Dn = np.zeros(len(g))
        gb[bl] -= 1.0 / (theta[bl] - lo[bl])
        Dn[bl] += 1.0 / (theta[bl] - lo[bl]) ** 2
        gb[bh] += 1.0 / (hi[bh] - theta[bh])
        Dn[bh] += 1.0 / (hi[bh] - theta[bh]) ** 2
        return gb, Dn

    def step_to(self, theta, d, frac) -> float:
        """The largest a ≤ 1 that goes at most ``frac`` of the way to the bounds along d."""
        lo, hi, bl, bh = self.lo, self.hi, self.bl, self.bh
        a = 1.0
        neg = d[bl] < 0
        if np.any(neg):
            a = min(a, frac * float(np.min((lo[bl][neg] - theta[bl][neg]) / d[bl][neg])))
        pos = d[bh] > 0
        if np.any(pos):
            a = min(a, frac * float(np.min((hi[bh][pos] - theta[bh][pos]) / d[bh][pos])))
        return a

    def inside(self, th) -> bool:
        return not (np.any(th[self.bl] <= self.lo[self.bl]) or np.any(th[self.bh] >= self.hi[self.bh]))


@dataclass
class _Run:
    """One solve's state: the problem's fixed pieces, the iterate and the path-following record."""

    c: np.ndarray
    nn: np.ndarray
    chains: list
    pre: _Precond
    bounds: _Bounds
    nu: float  # barrier parameter: Σ LMI orders + number of finite bounds
    gap_tol: float
    deadline: float | None
    max_newton: int
    verbose: bool
    t0: float
    theta: np.ndarray
    facs: list  # factor_all(chains, theta)
    mu: float
    sigma: float
    theta0: np.ndarray = None
    best: tuple = None  # the anytime answer: (lowest objective so far, its θ)
    centred: list = field(default_factory=list)  # (objective, θ) of the centred points
    Vprev: list = None  # the last small eigenvectors of each S (warm start of the subspace iteration)
    it: int = 0
    n_hv: int = 0
    t_cg: float = 0.0
    t_pre: float = 0.0
    stage_steps: int = 0
    nu_eff: float | None = None
    just_reduced: tuple | None = None  # (μ_old, μ_new) right after a reduction
    status: str = "optimal_inaccurate"
    msg: str = ""
    failed: bool = False

    @property
    def n_vars(self) -> int:
        return len(self.c)

    @property
    def objective(self) -> float:
        return float(self.c @ self.theta)


@dataclass
class _Model:
    """The barrier's local model at θ (step 1)."""

    states: list  # per LMI: the band of Σ, the pivots' inverses, the factors and the band of S
    gb: np.ndarray  # gradient of the barrier terms (without c/μ)
    Hv: object  # v ↦ H v
    rank: int  # columns of the preconditioner's low-rank part


class ChainBackend(Backend):
    """Barrier path following with matrix-free Newton-CG on block-tridiagonal LMIs (linear in depth)."""

    name = "chain"
    REQUIRED_MODULES = ("numpy", "scipy")
    description = ("lipsdp's linear-in-depth barrier solver for block-tridiagonal (layer-chain) LMIs: "
                   "selected inversion + Newton-CG, strictly feasible iterates (anytime)")
    licence = "MIT"
    #: a stopped solve (time or iteration budget) returns a strictly feasible point the check can verify
    anytime = True
    accurate = True
    #: the structure it exploits (and needs: see :meth:`accepts`)
    exploits = ("block-tridiagonal", "low-rank terms")
    requires = "block-tridiagonal LMIs (a layer chain), not chordally decomposed"
    #: auto picks it first for deep chains: at least this order and this many coordinate blocks
    auto_rank = 0
    auto_min_order = 1500
    auto_min_blocks = 20

    #: μ reduction factor once the Newton decrement is small
    SIGMA = 0.2
    #: Newton decrement² below which the point counts as centred
    CENTRED = 0.5
    #: fraction to the boundary per step, in S's own metric (S(θ + a d) ⪰ (1 − FRAC) S)
    FRAC = 0.5
    #: box |θ| ≤ BOX · (largest start multiplier) on the free variables
    BOX = 1e2
    #: floor on the relative gap asked for (tighter is limited by rounding in the band)
    MIN_GAP = 1e-6
    SIGMA_MIN = 0.02
    #: number of Σ's top modes in the preconditioner's low-rank part
    RANK = 12
    CG_TOL = 1e-2
    CG_MAXIT = 300

    # --- capabilities ---------------------------------------------------------------------------
    @classmethod
    def accepts(cls, problem) -> bool:
        """Whether every LMI of ``problem`` is block tridiagonal in the sense this solver needs: F0 on
        the band of ``LMI.blocks``, every term within two adjacent blocks or a diagonal C whose
        columns each are.  Read from the declared structure (block sizes and supports); the
        solver's band is not built."""
        return not problem.decomposed and all(_Layout(lmi).violation() is None for lmi in problem.lmis)

    #: the former name of :meth:`accepts` (kept while callers move)
    applies = accepts

    @classmethod
    def memory_doubles(cls, problem) -> dict[str, float]:
        """Peak storage in 8-byte doubles: 30·Σ_k b_k² + 10·R·b_max over the coordinate blocks b_k of
        all LMIs (the band of S, of S^{-1} and their derivatives; the U columns restricted to two
        blocks), R the total number of term columns — linear in depth, no dense n × n matrix.  An
        order-of-magnitude guard (a factor ≈ 2 either way), as in lipsdp.memory."""
        from ..base import problem_stats

        s = problem_stats(problem)
        blocks = [int(b) for b in s.blocks]
        if not blocks:
            return {cls.name: 0.0}
        return {cls.name: 30.0 * float(sum(float(b) ** 2 for b in blocks)) + 10.0 * float(s.R) * float(max(blocks))}

    # --- solve ------------------------------------------------------------------------------------
    def solve(self, problem, options: SolveOptions) -> SolveResult:
        with _single_thread():
            return self._guarded(self._solve, problem, options)

    def _start(self, problem, chains):
        """A strictly feasible θ (precond.feasible_start)."""
        return feasible_start(problem, chains)

    def _solve(self, problem, options, t0):
        run = self._setup(problem, options, t0)
        while True:
            model = self._model(run)
            d, g = self._direction(run, model)
            if d is None:  # converged, or the Newton system failed
                break
            if self._out_of_budget(run, options):
                break
            if not self._line_search(run, model, d, g):
                break
        return self._finish(run, t0)

    # --- the steps of _solve ----------------------------------------------------------------------
    def _setup(self, problem, options, t0) -> _Run:
        """Band structures, preconditioner layout, strictly feasible start, bounds, first μ."""
        nv = problem.n_vars
        c = np.asarray(problem.c, dtype=float)
        nn = np.flatnonzero(problem.nonneg)
        chains = []
        gbase = 0
        for lmi in problem.lmis:
            ch = _Chain(lmi, nv, gbase)
            chains.append(ch)
            gbase += ch.K + 2
        pre = _Precond(var_homes(chains, nv), nv)
        theta = self._start(problem, chains)
        theta0 = theta.copy()
        # the box on the free variables, far above the start's scale (see the module docstring)
        free = np.setdiff1d(np.flatnonzero(np.isin(np.arange(nv), homes_vars(chains))), nn)
        scale = max(1.0, float(np.max(np.abs(theta0[nn]))) if nn.size else 1.0)
        bounds = _Bounds(nv, nn, free, self.BOX * scale)
        nu = float(sum(ch.n for ch in chains) + bounds.count)
        return _Run(
            c=c, nn=nn, chains=chains, pre=pre, bounds=bounds, nu=nu,
            gap_tol=max(float(options.tol), self.MIN_GAP),
            deadline=None if options.time_limit is None else t0 + float(options.time_limit),
            max_newton=options.max_iters or 500, verbose=options.verbose, t0=t0,
            theta=theta, facs=factor_all(chains, theta), mu=max(abs(float(c @ theta)), 1e-300) / nu,
            sigma=self.SIGMA, theta0=theta0, best=(float(c @ theta), theta.copy()), Vprev=[None] * len(chains))

    def _merit(self, run, th, fs) -> float:
        """f_μ(θ) for the factors ``fs`` of S(θ)."""
        v = float(run.c @ th) / run.mu - sum(_Chain.logdet(f[2]) for f in fs)
        v -= run.bounds.log_sum(th)
        return v

    def _model(self, run) -> _Model:
        """Step 1: selected inverses, barrier gradient, preconditioner and H v at θ."""
        tp = time.perf_counter()
        chains, nv = run.chains, run.n_vars
        states = []
        gl = np.zeros(nv)
        for ch, (Sd, So, fac) in zip(chains, run.facs):
            Sig_d, Sig_o, Pinv = ch.selinv(fac, So)
            states.append(dict(Sd=Sig_d, Soff=Sig_o, Pinv=Pinv, fac=fac, So=So, Sd_S=Sd))
            gl += ch.traces(Sig_d, Sig_o)
        gb, Dn = run.bounds.gradient(run.theta, gl)
        Hd = _hess_blocks(chains, states, run.pre, nv)
        eigs = []
        for i, (ch, st) in enumerate(zip(chains, states)):
            r = min(self.RANK, ch.n)
            V, s = _small_eigs(ch, st, r, run.Vprev[i])
            run.Vprev[i] = V
            eigs.append((V, s))
        Phi = _lowrank_factor(chains, eigs, nv)
        run.pre.build(Hd, Dn, Phi)
        run.t_pre += time.perf_counter() - tp

        def Hv(v):
            out = Dn * v
            for ch, st in zip(chains, states):
                dD, dB = ch.assemble(v, scale=-1.0)
                Yd, Yo = ch.dselinv(st["fac"], st["So"], st["Pinv"], st["Sd"], st["Soff"], dD, dB)
                out += ch.traces(Yd, Yo)
            return out

        return _Model(states, gb, Hv, Phi.shape[1])

    def _direction(self, run, model):
        """Step 2 (and 3's gap tests): the Newton direction (d, g) for the current μ, reducing μ while
        θ is centred; (None, None) when the run converged or the Newton system failed."""
        c, pre = run.c, run.pre
        while True:
            g = c / run.mu + model.gb
            tc = time.perf_counter()
            d, ncg = _pcg(model.Hv, pre.solve, -g, self.CG_TOL, self.CG_MAXIT, run.deadline)
            if ncg < 0 and pre.Q is not None:  # preconditioner broke down: without the low-rank part
                pre.drop_lowrank()
                d, ncg = _pcg(model.Hv, pre.solve, -g, self.CG_TOL, self.CG_MAXIT, run.deadline)
            if ncg < 0 or not np.all(np.isfinite(d)):
                run.msg = "Newton system could not be solved (numerical limit)"
                run.failed = True
                return None, None
            run.t_cg += time.perf_counter() - tc
            run.n_hv += ncg
            lam2 = max(-float(g @ d), 0.0)
            obj = run.objective
            if self._converged_after_reduction(run, lam2, obj):
                return None, None
            if run.verbose:
                ne = "-" if run.nu_eff is None else f"{run.nu_eff:.3g}"
                print(f"[chain] it {run.it:3d} obj {obj:.9g} mu {run.mu:.3e} nu_eff {ne} lam2 {lam2:.2e} cg {ncg} "
                      f"r {model.rank} clamp {pre.clamped} t {time.perf_counter() - run.t0:.2f}s", flush=True)
            if lam2 > self.CENTRED:
                return d, g
            if self._centred(run, obj):
                return None, None

    def _converged_after_reduction(self, run, lam2, obj) -> bool:
        """Right after μ → μ' the Newton step is d ≈ −(1/μ' − 1/μ) H^{-1} c, so the decrement gives
        ν_eff = c^T H^{-1} c / μ² (the slope of the central path's objective); stop (status
        "optimal", μ back to the centred one) when ν_eff μ is below the gap asked for."""
        if run.just_reduced is None:
            return False
        mo, mn = run.just_reduced
        run.nu_eff = lam2 / (mo / mn - 1.0) ** 2
        run.just_reduced = None
        if run.nu_eff * mo <= run.gap_tol * max(abs(obj), 1e-300):
            run.mu = mo
            run.status = "optimal"
            return True
        return False

    def _centred(self, run, obj) -> bool:
        """θ is centred for μ: record it; stop (True) when ν μ is below the gap asked for, else reduce
        μ by σ, adapted to the Newton steps the last stage took."""
        if not run.centred or not np.array_equal(run.centred[-1][1], run.theta):
            run.centred.append((obj, run.theta.copy()))
        if run.nu * run.mu <= run.gap_tol * max(abs(obj), 1e-300):
            run.status = "optimal"
            return True
        if run.stage_steps <= 2:
            run.sigma = max(self.SIGMA_MIN, run.sigma * 0.5)
        elif run.stage_steps >= 5:
            run.sigma = min(0.5, run.sigma * 2.0)
        run.stage_steps = 0
        run.just_reduced = (run.mu, run.mu * run.sigma)
        run.mu *= run.sigma
        return False

    def _out_of_budget(self, run, options) -> bool:
        """Step 3's budget tests: time limit, iteration cap."""
        if run.deadline is not None and time.perf_counter() > run.deadline:
            run.status, run.msg = "time_limit", f"time limit {options.time_limit} s reached"
            return True
        if run.it >= run.max_newton:
            run.status, run.msg = ("time_limit", f"iteration limit {run.max_newton} reached") if options.max_iters \
                else ("optimal_inaccurate", "iteration limit reached")
            return True
        return False

    def _line_search(self, run, model, d, g) -> bool:
        """Step 4: Armijo backtracking on f_μ from the fraction-to-boundary step (in S's own metric and
        for the bounds); the accepted θ has a block Cholesky of S.  False when no step is accepted."""
        run.it += 1
        run.stage_steps += 1
        bounds = run.bounds
        amax = bounds.step_to(run.theta, d, 0.99)
        grow = 0.0
        for ch, st in zip(run.chains, model.states):
            Ad, Ao = ch.assemble(d)
            grow = max(grow, _max_growth(ch, st["fac"], Ad, Ao))
        cap = self.FRAC / grow if grow > 0 else 1.0
        fb = bounds.step_to(run.theta, d, self.FRAC)
        a = min(amax, cap, fb, 1.0)
        f0 = self._merit(run, run.theta, run.facs)
        slope = float(g @ d)
        for _ in range(60):
            th_new = run.theta + a * d
            if not bounds.inside(th_new):
                a *= 0.5
                continue
            fs = factor_all(run.chains, th_new)
            if fs is not None:
                f1 = self._merit(run, th_new, fs)
                if np.isfinite(f1) and f1 <= f0 + 1e-2 * a * slope:
                    run.theta, run.facs = th_new, fs
                    if run.objective < run.best[0]:
                        run.best = (run.objective, run.theta.copy())
                    return True
            a *= 0.5
        run.msg = "line search failed (numerical limit)"
        return False

    def _finish(self, run, t0) -> SolveResult:
        """The answer: the final iterate (or, after a stop, the best one), moved inside the check's
        margin by :meth:`_safeguard`; a more central iterate as a candidate when it had to move."""
        c, chains = run.c, run.chains
        if run.verbose:
            print(f"[chain] {run.it} Newton steps, {run.n_hv} Hessian products ({run.t_cg:.2f}s in CG, "
                  f"{run.t_pre:.2f}s preconditioner), status {run.status} {run.msg}", flush=True)
        theta = run.theta
        # a centring step at fixed μ may raise the objective: a stopped run returns its best iterate
        if run.status != "optimal" and run.best[0] < float(c @ theta):
            theta = run.best[1]
        th = self._safeguard(chains, c, theta, run.centred, run.theta0, run.nn)
        cands = []
        # more central iterates for the caller's check to try (each costs one dense check), only
        # when the final iterate itself failed the margin test
        if not np.array_equal(th, theta) and sum(ch.n for ch in chains) <= 2000:
            cands = [t_ for _, t_ in sorted(run.centred, key=lambda v: v[0])[:1] if not np.array_equal(t_, th)]
        return SolveResult(run.status, th, float(c @ th), time.perf_counter() - t0, iterations=run.it,
                           message=run.msg, extra={"candidates": cands, "hessian_products": run.n_hv,
                                                   "mu": run.mu, "nu_eff": run.nu_eff})

    # --- the returned point -----------------------------------------------------------------------
    def _margin_ok(self, chains, th, nn):
        """−F(θ) ≻ margin after diagonal scaling (the independent check's rounding requirement)."""
        u = 2.0 ** -53
        if nn.size and not np.all(th[nn] >= 0):
            return False
        for ch in chains:
            Sd, So = ch.S_band(th)
            d = [1.0 / np.sqrt(np.maximum(np.diag(D), 1e-300)) for D in Sd]
            m = max(20.0 * ch.n * ch.n * u, 1e-8)
            Sd = [D * dk[:, None] * dk[None, :] - m * np.eye(len(dk)) for D, dk in zip(Sd, d)]
            So = [B * d[k][:, None] * d[k + 1][None, :] for k, B in enumerate(So)]
            if ch.factor(Sd, So) is None:
                return False
        return True

    def _safeguard(self, chains, c, theta, centred, theta0, nn):
        """The final iterate if it keeps the check's margin, else a centred one within 1e-4 of it,
        else the iterate mixed with t of the start (objective variables raised by 1 + s)."""
        if self._margin_ok(chains, theta, nn):
            return theta
        best = float(c @ theta)
        for val, th in sorted(centred, key=lambda v: v[0])[:4]:
            if val <= best + 1e-4 * abs(best) and self._margin_ok(chains, th, nn):
                return th
        obj = np.zeros(len(c), dtype=bool)
        obj[nn] = c[nn] > 0
        for t in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
            th = theta + t * (theta0 - theta)
            for s_ in (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
                th[obj] = theta[obj] * (1.0 + s_)
                if self._margin_ok(chains, th, nn):
                    return th
        return theta
