"""The Newton system of the chain solver: its preconditioner, conjugate gradients, and the start.

The Newton system H d = −g of the barrier (solver.py) is solved by preconditioned CG with
Hessian-vector products from band.py; H itself (m × m, m multipliers) is never formed.  The
preconditioner is

    M = J + Φ Φ^T,

* Φ Φ^T = tr(A_i Σ_r A_j Σ_r): the part of the Hessian carried by the r smallest eigenpairs of S
  (Σ_r = V diag(1/s) V^T; subspace iteration on S^{-1} with the block factors, warm-started from
  the previous Newton step's vectors).  Near the optimum a few eigenvalues of S are O(μ), and their
  part of the Hessian is dense across all layers;
* J block diagonal over the variables' home layers: the exact Hessian block of each layer's own
  multipliers tr(A_v Σ A_w Σ) minus Φ Φ^T's block, eigenvalues floored at 1e-10 of the block's
  largest, so M ≻ 0 by construction;
* M^{-1} = J^{-1/2} (I − Q diag(σ²/(1 + σ²)) Q^T) J^{-1/2} with Q, σ the SVD of J^{-1/2} Φ (no
  cancellation, as there would be in the plain Woodbury formula).

Why this preconditioner (condition numbers measured on dense copies): benchmarks/results-chain.md.

The start (:func:`feasible_start`) is the interior-point backends' shared strictly feasible point
(:func:`lipsdp.backends.native.layerwise_start`), with the block Cholesky of band.py as the test.
"""

from __future__ import annotations

import time

import numpy as np

from lipsdp.errors import SolverError

from ..native import layerwise_start
from .band import _chain_mul, _chain_solve, factor_all

__all__ = ["feasible_start", "var_homes"]


def feasible_start(problem, chains):
    """A strictly feasible θ: the formulation's warm start (``LMIProblem.start``) when S ≻ 0 there;
    else NativeBackend's rule — nonneg multipliers 2·q^depth (depth = distance of the term's own
    block from the end), free ones 0, the objective variables 4^k with the smallest feasible k
    (bisection)."""
    nv = problem.n_vars
    depth = np.zeros(nv)
    for ch in chains:
        nb = ch.K + 1
        for G in ch.groups:
            # per variable: Σ over its pairs of diag(coef · sym(u_p u_q^T)) summed per block
            Ud = G.Ud
            dg = (G.coef * Ud[:, G.p] * Ud[:, G.q])
            top = np.bincount(G.var, dg[:G.ntop].sum(axis=0), minlength=nv)[G.uvars]
            bot = np.bincount(G.var, dg[G.ntop:].sum(axis=0), minlength=nv)[G.uvars] if G.two \
                else np.zeros(len(G.uvars))
            b = np.where((top < 0) & (top <= bot), G.g, np.where(bot < 0, G.g + 1, G.g + 1 if G.two else G.g))
            depth[G.uvars] = np.maximum(depth[G.uvars], nb - 1 - b)
    obj = (problem.c > 0) & problem.nonneg

    def feasible(th):
        return factor_all(chains, th) is not None

    th = layerwise_start(depth, problem.nonneg, obj, feasible, problem.start)
    if th is not None:
        return th
    raise SolverError(
        "chain solver: could not find a strictly feasible starting point (tried layer-wise multipliers "
        "and raising the objective variables); try solver='native'")


def var_homes(chains, n_vars):
    """Each variable's home: the first group (over all LMIs, numbered by ``gbase``) it appears in;
    −1 for variables in no group.  J's blocks are the homes."""
    homes = np.full(n_vars, -1, dtype=int)
    for ch in chains:
        for G in ch.groups:
            h = ch.gbase + G.g
            cur = homes[G.uvars]
            homes[G.uvars] = np.where((cur < 0) | (cur > h), h, cur)
    return homes


def _small_eigs(ch, st, r, V0=None, iters=3):
    """≈ the r smallest eigenpairs of S (largest of Σ) by subspace iteration on S^{-1} with
    Rayleigh–Ritz, warm-started from the previous Newton step's vectors."""
    n, off = ch.n, ch.off
    p = min(n, r + max(4, r // 2))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, p))
    if V0 is not None and V0.shape[0] == n:
        k0 = min(V0.shape[1], p)
        X[:, :k0] = V0[:, :k0]
    split = lambda M: [M[off[k]:off[k + 1]] for k in range(ch.K + 1)]
    for _ in range(iters):
        X = np.vstack(_chain_solve(st["fac"], st["Pinv"], split(X)))
        X, _r = np.linalg.qr(X)
    SX = np.vstack(_chain_mul(st["Sd_S"], st["So"], split(X)))
    T = X.T @ SX
    w, Q = np.linalg.eigh(0.5 * (T + T.T))
    V = X @ Q[:, :r]
    # rounding floor: eigenvalues below ~ε‖S‖ are not resolved (and would blow Φ up)
    smax = max(float(np.max(np.abs(np.diag(D)))) for D in st["Sd_S"])
    s = np.maximum(w[:r], 1e-13 * smax)
    return V, s


def _lowrank_factor(chains, eigs, n_vars):
    """Φ (n_vars × k) with Φ Φ^T = tr(A_i Σ_r A_j Σ_r), Σ_r = V diag(1/s) V^T per LMI."""
    cols = []
    for ch, (V, s) in zip(chains, eigs):
        r = V.shape[1]
        if r == 0:
            continue
        F = np.zeros((n_vars, r, r))
        for G in ch.groups:
            lo = ch.off[G.g]
            hi = ch.off[G.g + 2] if G.two else ch.off[G.g + 1]
            UV = G.Ud.T @ V[lo:hi]  # R × r
            a, b = UV[G.p], UV[G.q]
            m = 0.5 * G.coef[:, None, None] * (a[:, :, None] * b[:, None, :] + b[:, :, None] * a[:, None, :])
            np.add.at(F, G.var, m)
        sc = 1.0 / np.sqrt(s)
        F *= sc[None, :, None] * sc[None, None, :]
        iu, ju = np.triu_indices(r)
        w = np.where(iu == ju, 1.0, np.sqrt(2.0))
        cols.append(F[:, iu, ju] * w)
    return np.hstack(cols) if cols else np.zeros((n_vars, 0))


class _Precond:
    """M = J + Φ Φ^T: J block diagonal over the var homes (the local Hessian blocks minus Φ Φ^T's,
    clamped to be positive definite), Φ the low-rank part; M^{-1} by the Woodbury formula."""

    def __init__(self, homes, n_vars):
        self.n_vars = n_vars
        hv = np.where(homes < 0, homes.max(initial=0) + 1, homes)
        order = np.argsort(hv, kind="stable")
        self.order = order
        ukeys, starts = np.unique(hv[order], return_index=True)
        self.keys = ukeys
        self.bounds = np.append(starts, n_vars)
        self.pos_in_block = np.empty(n_vars, dtype=int)
        self.block_of = np.empty(n_vars, dtype=int)
        self.vs = []
        for i in range(len(ukeys)):
            vs = order[self.bounds[i]:self.bounds[i + 1]]
            self.block_of[vs] = i
            self.pos_in_block[vs] = np.arange(len(vs))
            self.vs.append(vs)

    def build(self, Hd, diag_extra, Phi):
        """J^{-1/2} per block (eigendecomposition, eigenvalues floored at 1e-10 of the block's largest),
        then (I + Φ̃ Φ̃^T)^{-1} = I − Q diag(σ²/(1 + σ²)) Q^T from the SVD of Φ̃ = J^{-1/2} Φ: positive
        definite by construction (no cancellation as in the plain Woodbury formula)."""
        self.Jh = []
        clamped = 0
        for vs, H in zip(self.vs, Hd):
            if Phi.shape[1]:
                Pv = Phi[vs]
                H = H - Pv @ Pv.T
            H = 0.5 * (H + H.T)
            H[np.diag_indices(len(vs))] += diag_extra[vs]
            if not np.all(np.isfinite(H)):
                H = np.diag(np.where(np.isfinite(np.diag(H)), np.abs(np.diag(H)), 1.0))
            try:
                w, Q = np.linalg.eigh(H)
            except np.linalg.LinAlgError:
                w, Q = np.maximum(np.abs(np.diag(H)), 1e-300), np.eye(len(vs))
            top = max(float(w[-1]), 1e-300)
            floor = 1e-10 * top
            if w[0] < floor:
                clamped += 1
            w = np.maximum(w, floor)
            self.Jh.append((Q / np.sqrt(w)) @ Q.T)
        self.clamped = clamped
        self.Q = None
        if Phi.shape[1] and np.all(np.isfinite(Phi)):
            with np.errstate(all="ignore"):
                Pt = self._jh(Phi)
            ok = bool(np.all(np.isfinite(Pt))) and float(np.max(np.abs(Pt), initial=0.0)) < 1e150
            if ok:
                try:
                    Q, sv, _ = np.linalg.svd(Pt, full_matrices=False)
                except np.linalg.LinAlgError:
                    ok = False
            if ok:
                with np.errstate(all="ignore"):
                    D = 1.0 / (1.0 + 1.0 / (sv * sv))  # σ²/(1 + σ²) without overflow
                D[~np.isfinite(D)] = 1.0
                self.Q = Q
                self.D = D

    def drop_lowrank(self):
        self.Q = None

    def _jh(self, R):
        out = np.empty_like(R)
        for vs, B in zip(self.vs, self.Jh):
            out[vs] = B @ R[vs]
        return out

    def solve(self, r):
        z = self._jh(r)
        if self.Q is not None:
            z = z - self.Q @ (self.D * (self.Q.T @ z))
        return self._jh(z)


def _hess_blocks(chains, states, pre, n_vars):
    """Diagonal (per var home) blocks of the local Hessian tr(A_v Σ A_w Σ), from each group's own
    pieces (Σ on the group's two blocks)."""
    Hd = [np.zeros((len(vs), len(vs))) for vs in pre.vs]
    blk, pos = pre.block_of, pre.pos_in_block
    for ch, st in zip(chains, states):
        Sd, Soff = st["Sd"], st["Soff"]
        for G in ch.groups:
            if G.two:
                Sl = np.block([[Sd[G.g], Soff[G.g]], [Soff[G.g].T, Sd[G.g + 1]]])
            else:
                Sl = Sd[G.g]
            Gm = G.Ud.T @ (Sl @ G.Ud)
            M = Gm[G.q][:, G.p] * Gm[G.p][:, G.q] + Gm[G.q][:, G.q] * Gm[G.p][:, G.p]
            Hl = 0.5 * (G.Sc.T @ M @ G.Sc)
            Hl = 0.5 * (Hl + Hl.T)
            bv = blk[G.uvars]
            for x in np.unique(bv):
                ia = np.flatnonzero(bv == x)
                pa = pos[G.uvars[ia]]
                sub = Hl[np.ix_(ia, ia)]
                if len(np.unique(pa)) == len(pa):
                    Hd[x][np.ix_(pa, pa)] += sub
                else:
                    np.add.at(Hd[x], (pa[:, None], pa[None, :]), sub)
    return Hd


def _pcg(Hv, Minv, b, tol, maxit, deadline=None):
    """Preconditioned CG for H x = b; stops at ‖r‖_{M^{-1}} ≤ tol ‖b‖_{M^{-1}}."""
    x = np.zeros_like(b)
    r = b.copy()
    z = Minv(r)
    p = z.copy()
    rz = float(r @ z)
    rz0 = rz
    it = 0
    if not rz0 > 0:
        return x, -1 if np.any(b) else 0
    for it in range(1, maxit + 1):
        Ap = Hv(p)
        pAp = float(p @ Ap)
        if not pAp > 0:
            break
        a = rz / pAp
        x += a * p
        r -= a * Ap
        z = Minv(r)
        rz_new = float(r @ z)
        if rz_new <= tol * tol * rz0:
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it
