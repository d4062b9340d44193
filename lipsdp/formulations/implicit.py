"""Implicit (equilibrium) models z = φ(W z + U x + b), y = C z (math.md §8).

**ℓ2 bound.**  With ξ = (x, z), v = W z + U x = [U, W] ξ and the QC Q(θ) of φ (slope-restricted,
GroupSort, Householder; full P-free multipliers by default)::

    M(ρ, θ) = [[U, W], [0, I]]^T Q(θ) [[U, W], [0, I]] + blkdiag(−ρ I, C^T C) ⪯ 0,

so ‖y − y'‖ ≤ sqrt(ρ) ‖x − x'‖ for any two equilibria (the lifted LMI of :mod:`.residual` with
one activation block).  bound = sqrt(ρ).

**Well-posedness** (a unique equilibrium for every x): if φ is non-expansive in the norm
‖z‖_T = sqrt(z^T T z) — true for every T = blkdiag(λ_i I + γ_i Π_i) ≻ 0 with λ ≥ 0 for
GroupSort / Householder (they preserve Π_i z and are 1-Lipschitz in ℓ2), and for T = diag(λ) ≻ 0
for slope-restricted φ with slopes in [−1, 1] — then T − W^T T W ≻ 0 makes z ↦ φ(Wz + Ux + b)
a contraction in ‖·‖_T (Banach).  **Decision:** the SDP imposes, with the *same* T as the QC,

    W^T T W − T + ε I ⪯ 0,   −T + ε I ⪯ 0     (ε = WELLPOSED_MARGIN),

and the check proves T − W^T T W ≻ 0 and T ≻ 0 strictly with :func:`lipsdp.check.psd_proof`
(rounding-safe Cholesky with a positive margin δ).  A certificate is ``verified`` only when
both the Lipschitz LMI and well-posedness are proven; the message reports both.

Normalisation (the :class:`~lipsdp.reductions.Scale` rewrite): U and C are divided by their
spectral norms, i.e. a congruence by D = diag(1/(‖U‖‖C‖) on x, 1/‖C‖ on z) with
θ = θ' ‖C‖², ρ = ρ' ‖U‖² ‖C‖²; W is not scaled.  Then the input reduction (d > n) and the
margins ε above (tightenings).
Revay, Wang, Manchester, "Lipschitz bounded equilibrium networks" (2020) for the contraction
argument; Pauli et al., ICLR 2024 (arXiv 2401.14033) for the QCs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lipsdp.constraints import constraint_for

from ..assembly import LMI, LMIProblem, LMITerm
from ..check import CheckResult, psd_proof
from ..errors import InvalidNetworkError, SolverError
from ..ir import Activation, GroupSort, SlopeRestricted
from ..reductions import InputReduction, Margin, Scale
from .base import Formulation, Recovered, select_output  # noqa: F401 (Recovered: re-exported)
from .residual import MARGIN, Lifted, check_lifted, lifted_problem

__all__ = ["ImplicitNetwork", "ImplicitL2", "implicit_lower_bound", "WELLPOSED_MARGIN"]

#: strictness of T − W^T T W ⪰ ε I and T ⪰ ε I in the solver's (normalised) problem
WELLPOSED_MARGIN = 1e-6


def _arr(x, what, ndim):
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidNetworkError(f"implicit model {what}: expected a numeric array ({exc})") from None
    if a.ndim != ndim or a.size == 0 or not np.all(np.isfinite(a)):
        raise InvalidNetworkError(f"implicit model {what}: expected a finite non-empty {ndim}-D array, got shape {a.shape}")
    return a


class ImplicitNetwork:
    """z = φ(W z + U x + b), y = C z.  W (n, n), U (n, d), C (m, n), b (n,) or None.

    ``activation``: an :class:`lipsdp.ir.Activation` (sized to n here), ``"maxmin"`` or a slope
    function name (``"relu"``, ``"tanh"``, …).  Any object with attributes W, U, C, b,
    activation (e.g. ``lipsdp.models.export.ImplicitSpec``) is accepted by :meth:`coerce`.
    """

    def __init__(self, W, U, C, activation="relu", b=None, name: str = ""):
        self.W = _arr(W, "W", 2)
        n = self.W.shape[0]
        if self.W.shape != (n, n):
            raise InvalidNetworkError(f"implicit model W: expected a square matrix, got shape {self.W.shape}")
        self.U = _arr(U, "U", 2)
        if self.U.shape[0] != n:
            raise InvalidNetworkError(f"implicit model U: expected {n} rows (one per hidden unit), got shape {self.U.shape}")
        self.C = _arr(C, "C", 2)
        if self.C.shape[1] != n:
            raise InvalidNetworkError(f"implicit model C: expected {n} columns, got shape {self.C.shape}")
        self.b = None if b is None else _arr(np.ravel(b), "b", 1)
        if self.b is not None and self.b.shape[0] != n:
            raise InvalidNetworkError(f"implicit model b: expected {n} entries, got {self.b.shape[0]}")
        if isinstance(activation, Activation):
            act = activation
        elif activation == "maxmin":
            act = GroupSort(2)
        elif isinstance(activation, str):
            act = SlopeRestricted(activation)
        else:
            raise InvalidNetworkError(
                f"implicit model activation: expected an lipsdp.ir.Activation or a name, got {type(activation).__name__}")
        self.activation = act.with_size(n)
        self.name = name

    @classmethod
    def coerce(cls, model) -> "ImplicitNetwork":
        if isinstance(model, cls):
            return model
        for a in ("W", "U", "C", "activation"):
            if not hasattr(model, a):
                raise InvalidNetworkError(f"implicit model: expected attributes W, U, C, activation (and b); missing {a!r}")
        return cls(model.W, model.U, model.C, model.activation, getattr(model, "b", None))

    @property
    def input_dim(self):
        return self.U.shape[1]

    @property
    def output_dim(self):
        return self.C.shape[0]

    def __repr__(self):
        return f"ImplicitNetwork(d={self.input_dim}, n={self.W.shape[0]}, m={self.output_dim}, {self.activation.describe()})"

    def equilibrium(self, x, tol: float = 1e-14, max_iter: int = 20000) -> np.ndarray:
        """Fixed point z(x) by Picard iteration (a contraction when the model is well posed)."""
        X = np.atleast_2d(np.asarray(x, dtype=float))
        Z = np.zeros((X.shape[0], self.W.shape[0]))
        bx = X @ self.U.T + (0.0 if self.b is None else self.b)
        for _ in range(max_iter):
            Zn = self.activation.forward(Z @ self.W.T + bx)
            if np.max(np.abs(Zn - Z)) <= tol * max(1.0, float(np.max(np.abs(Zn)))):
                return Zn
            Z = Zn
        raise SolverError("implicit model: the fixed-point iteration did not converge (is the model well posed?)")

    def forward(self, x):
        Z = self.equilibrium(x)
        y = Z @ self.C.T
        return y[0] if np.ndim(x) == 1 else y

    def jacobian(self, x):
        z = self.equilibrium(x)[0]
        v = self.W @ z + self.U @ np.ravel(x) + (0.0 if self.b is None else self.b)
        D = self.activation.jacobian(v)
        n = self.W.shape[0]
        return self.C @ np.linalg.solve(np.eye(n) - D @ self.W, D @ self.U)


def _t_basis(qc):
    """(param name, index, T_j) for the multipliers entering the QC's metric T = Σ θ_j T_j
    (:meth:`~lipsdp.constraints.QuadraticConstraint.metric`)."""
    out = []
    zero = {p.name: np.zeros(p.size) for p in qc.params()}
    for p in qc.params():
        if p.name not in qc.metric_params:
            continue
        for i in range(p.size):
            vals = {k: v.copy() for k, v in zero.items()}
            vals[p.name][i] = 1.0
            out.append((p.name, i, qc.metric(vals)))
    return out


def _t_matrix(qc, vals):
    return qc.metric(vals)


class ImplicitL2(Formulation):
    """ℓ2 bound and well-posedness of an implicit model (module docstring)."""

    norm = "l2"

    def __init__(self, model, method: str = "neuron", output=None):
        if not isinstance(model, ImplicitNetwork):
            raise InvalidNetworkError(f"ImplicitL2 needs an ImplicitNetwork, got {type(model).__name__}")
        super().__init__(model, method, output)
        m = model
        act = m.activation
        self.qc = constraint_for(act, method)
        self.qcs = [self.qc]
        C = select_output(m.C, output)
        self.C = C
        n, d = m.W.shape[0], m.input_dim
        self.n, self.d = n, d
        self.orig = Lifted(d, [np.hstack([m.U, m.W])], [self.qc], np.hstack([np.zeros((C.shape[0], d)), C]), [1.0], 1.0)
        self.sU = float(np.linalg.norm(m.U, 2)) or 1.0
        self.sC = float(np.linalg.norm(C, 2)) or 1.0
        self._V = None
        if d > n:
            _, _, Vt = np.linalg.svd(m.U, full_matrices=False)
            self._V = Vt.T
        self.zero = not np.any(m.U) or not np.any(C)
        self.one_lipschitz = float(act.lipschitz) <= 1.0

    def naive_bound(self) -> float:
        """‖C‖ ‖U‖ Lip(φ) / (1 − Lip(φ)‖W‖) when Lip(φ)‖W‖ < 1, else inf."""
        lip = float(self.model.activation.lipschitz)
        q = lip * float(np.linalg.norm(self.model.W, 2))
        if q >= 1:
            return float("inf")
        return self.sC * self.sU * lip / (1 - q)

    def trivial(self):
        return 0.0 if self.zero else None

    def dims(self):
        return [self.d, self.n]

    @property
    def check_order(self) -> int:
        return self.d + self.n

    def build(self) -> LMIProblem:
        base = lifted_problem(self.orig, margin=0.0)
        self._layout = base.layout
        W = self.model.W
        n = self.n
        I = sp.identity(n, format="csc")
        t_wp, t_pos = [], []
        for name, i, T in _t_basis(self.qc):
            var = base.layout[f"layer1.{name}"].start + i
            t_wp.append(LMITerm(var, I, W.T @ T @ W - T))
            t_pos.append(LMITerm(var, I, -T))
        Z = sp.csr_matrix((n, n))
        base.lmis.append(LMI(n, Z, t_wp, [n]))
        base.lmis.append(LMI(n, Z.copy(), t_pos, [n]))
        return base

    def reductions(self) -> list:
        sU, sC, d, n = self.sU, self.sC, self.d, self.n
        dz = np.full(n, 1.0 / sC)
        kappa = np.empty(max(sl.stop for sl in self._layout.values()))
        kappa[self._layout["rho"]] = 1.0 / (sU * sC) ** 2
        for p in self.qc.params():
            kappa[self._layout[f"layer1.{p.name}"]] = 1.0 / sC ** 2
        steps = [Scale([np.concatenate([np.full(d, 1.0 / (sU * sC)), dz]), dz, dz], kappa)]
        dr = d
        if self._V is not None:
            steps.append(InputReduction(self._V))
            dr = self._V.shape[1]
        steps.append(Margin(MARGIN, [np.arange(dr, dr + n), None, None]))
        steps.append(Margin(WELLPOSED_MARGIN, [None, np.arange(n), np.arange(n)]))
        return steps

    def wellposed(self, values) -> tuple[bool, str]:
        """Prove T ≻ 0 and T − W^T T W ≻ 0 (rounding-safe Cholesky, psd_proof)."""
        T = _t_matrix(self.qc, values)
        W = self.model.W
        A = T - W.T @ T @ W
        Aabs = np.abs(T) + np.abs(W).T @ np.abs(T) @ np.abs(W)
        ok1, d1 = psd_proof(T, np.abs(T), 1)
        ok2, d2 = psd_proof(A, Aabs, 2 * self.n)
        if not self.one_lipschitz:
            return False, "well-posedness NOT established: the activation is not 1-Lipschitz (slopes outside [-1, 1])"
        if ok1 and ok2:
            return True, f"well-posed: T > 0 and T - W^T T W > 0 proven (Cholesky margins {d1:.2g}, {d2:.2g})"
        return False, "well-posedness NOT proven: " + ("T - W^T T W > 0 failed" if ok1 else "T > 0 failed")

    def check(self, rec) -> CheckResult:
        res = check_lifted(self.orig, rec.layers)
        ok, msg = self.wellposed(rec.layers[0])
        res.verified = bool(res.verified and ok)
        res.message = f"{res.message}; {msg}"
        return res

    def lower_bound(self) -> tuple[float, str]:
        return implicit_lower_bound(self.model, output=self.output), "quotient"


def implicit_lower_bound(model, samples: int = 64, seed: int = 0, output=None) -> float:
    """Largest finite-difference quotient ‖y(x + h d) − y(x)‖ / ‖h d‖ along top Jacobian directions
    (of c^T y for ``output`` = c or a logit index)."""
    m = ImplicitNetwork.coerce(model)
    if output is not None:
        C = select_output(m.C, output)
        m = ImplicitNetwork(m.W, m.U, C, m.activation, m.b)
    rng = np.random.default_rng(seed)
    best = 0.0
    for _ in range(samples):
        x = rng.standard_normal(m.input_dim)
        J = m.jacobian(x)
        _, _, Vt = np.linalg.svd(J)
        d = Vt[0]
        y0 = m.forward(x)
        for h in (1e-2, 1e-3, 1e-4):
            q = float(np.linalg.norm(m.forward(x + h * d) - y0)) / (h * float(np.linalg.norm(d)))
            best = max(best, q)
    return best
