"""Independent float64 certificate checks (math.md §9).

A solver's point is never trusted.  From the multipliers alone (projected onto their admissible
set), the check

1. rebuilds the LMI from its definition (the QC's paper formula :meth:`blocks`, not the
   low-rank terms the solver saw) in the *original* network coordinates — before any
   normalisation or input reduction;
2. computes the smallest valid ρ for those multipliers exactly up to rounding (a Schur complement
   on the hidden block; ρ enters only the input block);
3. proves −M(ρ') ⪰ 0 for a slightly larger ρ' in floating point: after an exact power-of-two
   diagonal scaling D, a Cholesky factorisation of D(−M(ρ'))D − δI must succeed, where
   δ = 2·(γ_{n+1}/(1 − γ_{n+1})·tr(D(−M)D) + γ_K·‖D|M|D‖_∞) covers the Cholesky backward error
   (Demmel 1989; Rump, BIT 2006, "Verification of positive definiteness") and the rounding of the
   assembly (K = longest inner product; |M| is the same assembly in absolute values).  γ_k =
   k·u/(1 − k·u), u = 2^−53.  The factor 2 is a safety margin for blocked LAPACK kernels.

The reported bound is computed from ρ' and rounded upwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

__all__ = ["CheckResult", "psd_proof", "check_feedforward", "U_ROUND"]

U_ROUND = 2.0 ** -53
_STEPS = (1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2)


def _gamma(k: int) -> float:
    return k * U_ROUND / (1 - k * U_ROUND)


@dataclass
class CheckResult:
    verified: bool
    rho: float  # the checked ρ' (for ℓ2, bound = sqrt(ρ'))
    rho_min: float  # smallest valid ρ for these multipliers (before the rounding margin)
    margin: float  # δ used in the Cholesky test (scaled coordinates)
    message: str
    seconds: float = 0.0


def psd_proof(A: np.ndarray, A_abs: np.ndarray, inner: int) -> tuple[bool, float]:
    """True if the float matrix A certainly stands for a PSD matrix despite rounding.

    ``A_abs`` bounds the magnitudes summed to form A's entries (same assembly in absolute
    values), ``inner`` the longest inner product length used.  Returns (passed, δ).
    """
    n = A.shape[0]
    diag = np.diag(A)
    if np.any(~np.isfinite(A)) or np.any(diag <= 0):
        return False, float("nan")
    d = np.exp2(-np.round(0.5 * np.log2(diag)))  # exact power-of-two scaling
    As = A * d[:, None] * d[None, :]
    Abs = A_abs * d[:, None] * d[None, :]
    delta = 2.0 * (_gamma(n + 1) / (1 - _gamma(n + 1)) * float(np.trace(As)) + _gamma(inner + 2) * float(np.max(Abs.sum(axis=1))))
    try:
        sla.cholesky(As - delta * np.eye(n), lower=True, check_finite=False)
    except (np.linalg.LinAlgError, sla.LinAlgError):
        return False, delta
    return True, delta


def check_feedforward(Ws, qcs, values, extra_last=None) -> CheckResult:
    """Check an ℓ2 certificate of a feedforward network (math.md §2 / §4).

    Ws: the original weight matrices W_0..W_l (the last one already restricted to the selected
    output, if any); qcs: one QC per hidden layer; values: one multiplier dict per hidden layer.

        M(ρ) = Σ_k L_k^T Q_k L_k + blkdiag(−ρ I, 0, …, 0, W_l^T W_l) ⪯ 0,
        L_k = [W_{k−1} E_{k−1}; E_k].
    """
    t0 = time.perf_counter()
    l = len(qcs)
    dims = [W.shape[1] for W in Ws]  # n_0 .. n_l
    off = np.concatenate([[0], np.cumsum(dims)])
    n = int(off[-1])
    M = np.zeros((n, n))
    Mabs = np.zeros((n, n))
    inner = max(max(W.shape) for W in Ws)
    for k in range(1, l + 1):
        W = Ws[k - 1]
        Q11, Q12, Q22 = qcs[k - 1].blocks(values[k - 1])
        i, j = slice(off[k - 1], off[k]), slice(off[k], off[k + 1])
        M[i, i] += W.T @ Q11 @ W
        M[i, j] += W.T @ Q12
        M[j, i] += Q12.T @ W
        M[j, j] += Q22
        aW, a11, a12 = np.abs(W), np.abs(Q11), np.abs(Q12)
        Mabs[i, i] += aW.T @ a11 @ aW
        Mabs[i, j] += aW.T @ a12
        Mabs[j, i] += a12.T @ aW
        Mabs[j, j] += np.abs(Q22)
    Wl = Ws[-1]
    last = slice(off[l], off[l + 1])
    M[last, last] += Wl.T @ Wl
    Mabs[last, last] += np.abs(Wl).T @ np.abs(Wl)
    return _finish(M, Mabs, dims[0], Ws[0], inner, t0)


def _finish(M, Mabs, n0, W0, inner, t0) -> CheckResult:
    """Smallest ρ with M0 − ρ E_0 ⪯ 0 (ρ on the first n0 coordinates), then the rounding proof."""
    n = M.shape[0]
    if n == n0:  # no hidden layer: M = W^T W − ρ I
        rho_min = float(np.linalg.eigvalsh(M)[-1])
    else:
        H = M[n0:, n0:]
        try:
            L = sla.cholesky(-H, lower=True, check_finite=True)
        except (np.linalg.LinAlgError, sla.LinAlgError, ValueError):
            return CheckResult(False, float("inf"), float("inf"), float("nan"),
                               "the hidden-layer block of the LMI is not negative definite for the solver's multipliers",
                               time.perf_counter() - t0)
        Y = sla.solve_triangular(L, M[n0:, :n0], lower=True, check_finite=False)
        S0 = M[:n0, :n0] + Y.T @ Y  # Schur complement at ρ = 0
        rho_min = float(sla.eigvalsh(S0, subset_by_index=[n0 - 1, n0 - 1])[0]) if n0 > 1 else float(S0[0, 0])
    rho_min = max(rho_min, 0.0)
    scale = rho_min if rho_min > 0 else max(float(np.max(np.abs(np.diag(M)))), np.finfo(float).tiny)
    delta = float("nan")
    for step in _STEPS:
        rho = rho_min + step * scale
        A = -M.copy()
        A[np.arange(n0), np.arange(n0)] += rho
        Aabs = Mabs.copy()
        Aabs[np.arange(n0), np.arange(n0)] += rho
        ok, delta = psd_proof(A, Aabs, inner)
        if ok:
            return CheckResult(True, float(rho), rho_min, delta,
                               f"Cholesky with margin passed at rho = rho_min·(1 + {step:g})" if rho_min > 0
                               else "Cholesky with margin passed", time.perf_counter() - t0)
    return CheckResult(False, float(rho_min), rho_min, delta,
                       "the rounding-error-safe Cholesky test failed even with rho inflated by 1%",
                       time.perf_counter() - t0)
