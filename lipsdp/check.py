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

**On a subspace.**  For GroupSort / Householder layers with P-free multipliers, lipsdp certifies on
the subspace the network's increments always lie in (:mod:`lipsdp.formulations.reduced`):
ξ = N η with Δx^k = W_{k−1}Δx^{k−1} + B_k s^k (B_k exact, :meth:`free_basis`).  The check then
proves −N'^T M N' ⪰ ε I for the *computed* N' (rounded products of the weights), where
ε = ‖M‖_F (2‖N'‖_F ‖E‖ + ‖E‖²) covers ‖E‖ = ‖N − N'‖₂, bounded by the recursion
‖E_k‖ ≤ ‖W_{k−1}‖₂‖E_{k−1}‖ + γ_{n}‖|W_{k−1}||N'_{k−1}|‖_F with rigorous upper bounds on ‖W‖₂
(:func:`spectral_upper`).  Our derivation: ξ^T(−M)ξ = η^T N'^T(−M)N' η + (terms in E).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

__all__ = ["CheckResult", "psd_proof", "prove_rho", "assemble", "feedforward_blocks", "check_feedforward", "U_ROUND",
           "spectral_upper", "subspace_basis", "on_subspace"]

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


def psd_proof(A: np.ndarray, A_abs: np.ndarray, inner: int, extra=None) -> tuple[bool, float]:
    """True if the float matrix A certainly stands for a PSD matrix despite rounding.

    ``A_abs`` bounds the magnitudes summed to form A's entries (same assembly in absolute
    values), ``inner`` the longest inner product length used.  ``extra(d)``, if given, bounds
    ‖D F D‖₂ for a further perturbation F of A, D = diag(d) the scaling used.  Returns (passed, δ).
    Sparse A above SPARSE_PROOF_ORDER: the banded Cholesky on a reverse Cuthill–McKee ordering when
    the band adds little fill, else the sparse proof :func:`lipsdp.check_sparse.sparse_psd_proof`.
    """
    n = A.shape[0]
    if sp.issparse(A):  # block-tridiagonal LMIs of deep nets: the same test in sparse/banded storage
        A, A_abs = sp.csr_matrix(A), sp.csr_matrix(A_abs)
        if n > SPARSE_PROOF_ORDER:  # large: banded Cholesky on an RCM ordering, else a sparse Cholesky
            from .check_sparse import band_wins, sparse_psd_proof

            p = band_wins(A)
            if p is None:  # convolutions: the band would fill in (check_sparse module docstring)
                return sparse_psd_proof(A, A_abs, inner, extra)
            A, A_abs = A[p][:, p], A_abs[p][:, p]  # a symmetric permutation: same verdict, same δ
            if extra is not None:
                inv, extra0 = np.argsort(p), extra
                extra = lambda dp: extra0(dp[inv])  # noqa: E731  (extra sees the original order)
        diag = A.diagonal()
        if np.any(~np.isfinite(A.data)) or np.any(diag <= 0):
            return False, float("nan")
        d = np.exp2(-np.round(0.5 * np.log2(diag)))
        D = sp.diags(d)
        As = (D @ A @ D).tocsr()
        rows = np.asarray(abs(D @ A_abs @ D).sum(axis=1)).ravel()
        tr = float(As.diagonal().sum())
    else:
        diag = np.diag(A)
        if np.any(~np.isfinite(A)) or np.any(diag <= 0):
            return False, float("nan")
        d = np.exp2(-np.round(0.5 * np.log2(diag)))  # exact power-of-two scaling
        As = A * d[:, None] * d[None, :]
        rows = (A_abs * d[:, None] * d[None, :]).sum(axis=1)
        tr = float(np.trace(As))
    delta = 2.0 * (_gamma(n + 1) / (1 - _gamma(n + 1)) * tr + _gamma(inner + 2) * float(np.max(rows)))
    if extra is not None:
        delta += 2.0 * float(extra(d))
    if sp.issparse(As):
        As = As - delta * sp.identity(n, format="csr")
    else:
        As[np.arange(n), np.arange(n)] -= delta
    return _spd_factor(As) is not None, delta


#: sparse orders above which _spd_factor factors a wide-band sparse matrix by a sparse factorisation
#: instead of a dense Cholesky (benchmarks/results-sparsecheck.md: faster from order ~5000, less memory)
DENSE_FACTOR_ORDER = 4000

#: sparse orders above which psd_proof picks between the banded Cholesky (RCM ordering) and the
#: sparse proof of :mod:`lipsdp.check_sparse`; below it, the dense factorisation is cheap
SPARSE_PROOF_ORDER = 1000


def _bandwidth(A: np.ndarray) -> int:
    """Upper bandwidth of a symmetric matrix (max j − i over its nonzeros)."""
    nz = A != 0
    last = A.shape[1] - 1 - np.argmax(nz[:, ::-1], axis=1)
    last[~nz.any(axis=1)] = 0
    return int(max(0, np.max(last - np.arange(A.shape[0]))))


def _spd_factor(A: np.ndarray):
    """A Cholesky factorisation of the symmetric A, or None if it fails (not positive definite).

    Banded storage (LAPACK dpbtrf) when A's bandwidth is small — the block-tridiagonal LMIs of
    feedforward slope-restricted networks: O(n b²) instead of O(n³) (ECLipsE grid depth 100:
    order 8004, bandwidth 159).  The rounding-error bound of :func:`psd_proof` holds for either.
    """
    n = A.shape[0]
    if sp.issparse(A):
        C = sp.coo_matrix(A)
        u = int(max(0, np.max(C.col - C.row))) if C.nnz else 0
    else:
        u = _bandwidth(A) if n > 400 else n
    if sp.issparse(A) and 4 * u >= n and n > DENSE_FACTOR_ORDER:  # no dense copy of a large LMI
        from .check_sparse import sparse_solver

        return sparse_solver(A)
    try:
        if 4 * u < n:
            ab = np.zeros((u + 1, n))
            for k in range(u + 1):
                ab[u - k, k:] = A.diagonal(k)
            return ("band", sla.cholesky_banded(ab, lower=False, check_finite=False))
        if sp.issparse(A):
            A = A.toarray()
        return ("dense", sla.cholesky(A, lower=True, check_finite=False))
    except (np.linalg.LinAlgError, sla.LinAlgError, ValueError):
        return None


def _spd_solve(factor, B: np.ndarray) -> np.ndarray:
    kind, F = factor
    if kind == "sparse":  # lipsdp.check_sparse.sparse_solver
        return F(B)
    if kind == "band":
        return sla.cho_solve_banded((F, False), B, check_finite=False)
    return sla.cho_solve((F, True), B, check_finite=False)


def spectral_upper(W: np.ndarray) -> float:
    """A rigorous upper bound on ‖W‖₂: the float σ_max enlarged until σ²I − W^T W ⪰ 0 is proved
    by :func:`psd_proof` (else ‖W‖_F, rounded up)."""
    W = np.asarray(W, dtype=float)
    if W.size == 0 or not np.any(W):
        return 0.0
    G, Gabs, inner = (W.T @ W, np.abs(W).T @ np.abs(W), W.shape[0]) if W.shape[0] >= W.shape[1] else \
        (W @ W.T, np.abs(W) @ np.abs(W).T, W.shape[1])
    s = float(np.linalg.norm(W, 2))
    eye = np.eye(G.shape[0])
    for f in (1 + 1e-9, 1 + 1e-6, 1 + 1e-3):
        v = (s * f) ** 2
        if psd_proof(v * eye - G, v * eye + Gabs, inner)[0]:
            return float(np.sqrt(v) * (1 + 4 * U_ROUND))
    return float(np.sqrt(np.sum(W * W)) * (1 + (W.size + 2) * U_ROUND))


def _norm2_upper(W) -> float:
    """A rigorous upper bound on ‖W‖₂ (dense: :func:`spectral_upper`; sparse: the operator's own)."""
    if sp.issparse(W):
        from .linop import Sparse

        return Sparse(W).norm2_upper()
    return spectral_upper(W)


def subspace_basis(Ws, frees, border: int = 0):
    """(N', per-block bounds on ‖(N − N')[:, block j]‖₂, η block offsets).

    The increments of a feedforward net with free directions B_k: ``Ws`` = W_0..W_l (the last is
    not used), ``frees`` = one B_k (n_k × f_k, exact) or None per hidden layer (None: Δx^k is a
    coordinate of its own).  η = (Δx^0, s^1, …, s^l) and ``border`` extra identity coordinates.
    """
    l = len(frees)
    dims = [W.shape[1] for W in Ws]
    fd = [dims[0]] + [dims[k] if frees[k - 1] is None else frees[k - 1].shape[1] for k in range(1, l + 1)]
    if border:
        fd.append(border)
    eoff = np.concatenate([[0], np.cumsum(fd)]).astype(int)
    n_eta = int(eoff[-1])
    prev = np.zeros((dims[0], n_eta))
    prev[:, : dims[0]] = np.eye(dims[0])
    rows = [prev]
    err_prev = np.zeros(len(fd))  # ‖E_{k−1}[:, block j]‖ bounds
    err_sq = np.zeros(len(fd))
    for k in range(1, l + 1):
        B, W = frees[k - 1], Ws[k - 1]
        cur = np.zeros((dims[k], n_eta))
        e = np.zeros(len(fd))
        if B is None:
            cur[:, eoff[k]:eoff[k + 1]] = np.eye(dims[k])
        else:
            used = prev[:, : eoff[k]]
            cur[:, : eoff[k]] = W @ used  # W dense, or scipy sparse (structured operators)
            cur[:, eoff[k]:eoff[k + 1]] = B
            absprod = np.asarray(abs(W) @ np.abs(used))
            w = _norm2_upper(W)
            g = _gamma(W.shape[1] + 1) * (1 + 1e-6)
            for j in range(k):
                rnd = g * float(np.sqrt(np.sum(absprod[:, eoff[j]:eoff[j + 1]] ** 2)))
                e[j] = (w * err_prev[j] + rnd) * (1 + 1e-9)
        rows.append(cur)
        err_sq += e ** 2
        prev, err_prev = cur, e
    if border:
        cur = np.zeros((border, n_eta))
        cur[:, n_eta - border:] = np.eye(border)
        rows.append(cur)
    return np.vstack(rows), np.sqrt(err_sq) * (1 + 1e-9), eoff


def on_subspace(M, Mabs, inner, Ws, frees, rho_cols, border: int = 0):
    """The check's matrices on the subspace: (N'^T M N', |N'|^T Mabs |N'|, inner', extra).

    ``rho_cols`` (η columns, ± weight): where ρ enters M(ρ) = M + ρ·(that diagonal), so that
    ``extra(ρ, d)`` bounds ‖D(N^T M(ρ) N − N'^T M(ρ) N')D‖₂ ≤ 2‖E D‖ ‖M(ρ) N' D‖ + ‖E D‖² ‖M(ρ)‖
    for :func:`psd_proof` (E = N − N', bounded per η block by :func:`subspace_basis`).
    """
    N, errs, eoff = subspace_basis(Ws, frees, border)
    MN = M @ N
    Mr = N.T @ MN
    Mr = 0.5 * (Mr + Mr.T)
    aN = np.abs(N)
    Mabs_r = aN.T @ (Mabs @ aN)
    normM = float(np.sqrt(np.sum(M * M))) * (1 + 1e-9)
    # ‖M N'[:, c]‖ at ρ = 0: the computed column plus its rounding, ≤ γ_{n+1}‖M‖_F‖N'[:, c]‖
    colnorm = (np.sqrt(np.sum(MN * MN, axis=0)) + _gamma(M.shape[0] + 1) * normM * np.sqrt(np.sum(N * N, axis=0))) \
        * (1 + 1e-9)
    idx, wts = rho_cols
    rho_part = np.zeros(N.shape[1])
    rho_part[idx] = np.abs(wts)  # N'[:, c] = e_c on those columns (input / border identity)
    nblk = len(errs)

    def extra(rho: float, d: np.ndarray) -> float:
        dmax = np.array([np.max(d[eoff[j]:eoff[j + 1]]) if eoff[j + 1] > eoff[j] else 0.0 for j in range(nblk)])
        ed = float(np.sqrt(np.sum((errs * dmax) ** 2)))
        mnd = float(np.sqrt(np.sum(((colnorm + abs(rho) * rho_part) * d) ** 2)))
        return (2 * ed * mnd + ed * ed * (normM + abs(rho) * float(np.max(rho_part)))) * (1 + 1e-6)

    return Mr, Mabs_r, inner + 2 * M.shape[0], extra


def assemble(dims, blocks, sparse: bool = False):
    """M and the same assembly in absolute values |M|, from ``blocks`` = (i, j, X, |X|) on the
    coordinate blocks of sizes ``dims`` (blocks with the same (i, j) add up).  Dense arrays, or
    sparse CSR in block storage (deep block-tridiagonal LMIs: memory ∝ the nonzero blocks)."""
    off = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    n = int(off[-1])
    if sparse:
        acc: dict = {}
        for i, j, X, Xa in blocks:
            if (i, j) in acc:
                acc[(i, j)][0] += X
                acc[(i, j)][1] += Xa
            else:
                acc[(i, j)] = [np.array(X, dtype=float), np.array(Xa, dtype=float)]
        nb = len(dims)
        grid = [[sp.csr_matrix((dims[i], dims[i])) if i == j else None for j in range(nb)] for i in range(nb)]
        grid_abs = [row.copy() for row in grid]
        for (i, j), (X, Xa) in acc.items():
            grid[i][j], grid_abs[i][j] = sp.csr_matrix(X), sp.csr_matrix(Xa)
        return sp.bmat(grid, format="csr"), sp.bmat(grid_abs, format="csr")
    M = np.zeros((n, n))
    Mabs = np.zeros((n, n))
    for i, j, X, Xa in blocks:
        bi, bj = slice(off[i], off[i + 1]), slice(off[j], off[j + 1])
        M[bi, bj] += X
        Mabs[bi, bj] += Xa
    return M, Mabs


def feedforward_blocks(Ws, qcs, values):
    """The nonzero blocks (i, j, block of M, same assembly in absolute values) of
    M = Σ_k L_k^T Q_k L_k with L_k = [W_{k−1} E_{k−1}; E_k] on the blocks (x^0, …, x^l): the QC
    part of every feedforward LMI (math.md §2, §4), from the QC's paper formula (``blocks``)."""
    for k in range(1, len(qcs) + 1):
        W = Ws[k - 1]  # dense, or scipy sparse for structured operators (products stay exact-order)
        Q11, Q12, Q22 = qcs[k - 1].blocks(values[k - 1])
        aW, a11, a12 = abs(W), np.abs(Q11), np.abs(Q12)
        yield k - 1, k - 1, _dense(W.T @ Q11 @ W), _dense(aW.T @ a11 @ aW)
        yield k - 1, k, _dense(W.T @ Q12), _dense(aW.T @ a12)
        yield k, k - 1, _dense(Q12.T @ W), _dense(a12.T @ aW)
        yield k, k, Q22, np.abs(Q22)


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def check_feedforward(Ws, qcs, values, extra_last=None) -> CheckResult:
    """Check an ℓ2 certificate of a feedforward network (math.md §2 / §4).

    Ws: the original weight matrices W_0..W_l (the last one already restricted to the selected
    output, if any); qcs: one QC per hidden layer; values: one multiplier dict per hidden layer.

        M(ρ) = Σ_k L_k^T Q_k L_k + blkdiag(−ρ I, 0, …, 0, W_l^T W_l) ⪯ 0,
        L_k = [W_{k−1} E_{k−1}; E_k].
    """
    t0 = time.perf_counter()
    dims = [W.shape[1] for W in Ws]  # n_0 .. n_l
    inner = max(max(W.shape) for W in Ws)
    frees = [qc.free_basis() for qc in qcs]
    Wl = Ws[-1]
    blocks = list(feedforward_blocks(Ws, qcs, values)) + [(len(qcs), len(qcs), _dense(Wl.T @ Wl), _dense(abs(Wl).T @ abs(Wl)))]
    subspace = any(B is not None for B in frees)
    M, Mabs = assemble(dims, blocks, sparse=sum(dims) > SPARSE_ORDER and not subspace)
    rho_idx = np.arange(dims[0])
    extra = None
    if subspace:
        M, Mabs, inner, extra = on_subspace(M, Mabs, inner, Ws, frees, (rho_idx, 1.0))
    return prove_rho(M, Mabs, rho_idx, 1.0, inner, extra, t0)


#: orders above which check_feedforward assembles the block-tridiagonal M in sparse storage (the
#: dense 8004 × 8004 copies of the ECLipsE grid at depth 100 took 10 s of a 60 s budget)
SPARSE_ORDER = 2000


def prove_rho(M, Mabs, rho_idx, rho_weight, inner: int, extra=None, t0: float | None = None) -> CheckResult:
    """The checked ρ' for an LMI in which ρ enters as −ρ·w_i on the diagonal entries ``rho_idx``:

        M(ρ) = M − ρ Σ_i w_i e_i e_i^T ⪯ 0      (ℓ2: ρ on the input block, w = 1;
                                                 ℓ∞: ρ on the border coordinate, w = 2).

    1. ρ_min exactly up to rounding: with H = M without the ρ coordinates (must be ≺ 0) and
       S_0 = M_RR + M_RH (−H)^{-1} M_HR (Schur complement), ρ_min = λ_max(W^{-1/2} S_0 W^{-1/2}).
    2. The rounding-safe proof :func:`psd_proof` of −M(ρ') ⪰ 0 at ρ' = ρ_min (1 + step), for
       increasing steps.  ``extra(ρ, d)`` bounds a further perturbation (the subspace check).
    """
    t0 = time.perf_counter() if t0 is None else t0
    n = M.shape[0]
    sparse = sp.issparse(M)
    R = np.asarray(rho_idx, dtype=int) % n
    w = np.broadcast_to(np.asarray(rho_weight, dtype=float), R.shape).astype(float)
    Hidx = np.setdiff1d(np.arange(n), R)
    dense_part = (lambda A: A.toarray()) if sparse else (lambda A: A)
    if Hidx.size == 0:
        S0 = dense_part(M)[np.ix_(R, R)]
    else:
        r = R.size
        if np.array_equal(R, np.arange(r)):  # ρ on the leading block (ℓ2)
            H, B, MRR = M[r:, r:], M[r:, :r], M[:r, :r]
        elif np.array_equal(R, np.arange(n - r, n)):  # ρ on the trailing block (ℓ∞ border)
            H, B, MRR = M[:n - r, :n - r], M[:n - r, n - r:], M[n - r:, n - r:]
        else:
            H, B, MRR = M[Hidx][:, Hidx], M[Hidx][:, R], M[R][:, R]
        fac = _spd_factor(-H) if np.all(np.isfinite(H.data if sparse else H)) else None
        if fac is None:
            return CheckResult(False, float("inf"), float("inf"), float("nan"),
                               "the LMI without its rho coordinates (the hidden-layer block) is not negative definite "
                               "for the solver's multipliers", time.perf_counter() - t0)
        B, MRR = dense_part(B), dense_part(MRR)
        S0 = MRR + B.T @ _spd_solve(fac, B)  # Schur complement at ρ = 0
    S0 = 0.5 * (S0 + S0.T) / np.sqrt(np.outer(w, w))
    k = S0.shape[0]
    rho_min = float(sla.eigvalsh(S0, subset_by_index=[k - 1, k - 1])[0]) if k > 1 else float(S0[0, 0])
    rho_min = max(rho_min, 0.0)
    scale = rho_min if rho_min > 0 else max(float(np.max(np.abs(M.diagonal()))), np.finfo(float).tiny)
    delta = float("nan")
    for step in _STEPS:
        rho = rho_min + step * scale
        add = np.zeros(n)
        add[R] = rho * w
        if sparse:
            E = sp.diags(add)
            A, Aabs = (E - M).tocsr(), (Mabs + E).tocsr()
        else:
            A = -M
            A[np.arange(n), np.arange(n)] += add
            Aabs = Mabs.copy()
            Aabs[np.arange(n), np.arange(n)] += add
        ok, delta = psd_proof(A, Aabs, inner, None if extra is None else (lambda d, r=rho: extra(r, d)))
        if ok:
            return CheckResult(True, float(rho), rho_min, delta,
                               f"Cholesky with margin passed at rho = rho_min·(1 + {step:g})" if rho_min > 0
                               else "Cholesky with margin passed", time.perf_counter() - t0)
    return CheckResult(False, float(rho_min), rho_min, delta,
                       "the rounding-error-safe Cholesky test failed even with rho inflated by 1%",
                       time.perf_counter() - t0)
