"""Barrier solver for block-tridiagonal LMI problems whose every operation is linear in depth ("chain").

Solves the solver-neutral :class:`~lipsdp.assembly.LMIProblem`

    minimise c^T θ   s.t.   F(θ) = F0 + Σ_i θ_i U_i C_i U_i^T ⪯ 0,   θ[nonneg] ≥ 0,

when every LMI is *block tridiagonal* in its coordinate blocks (``LMI.blocks``): every term's
U touches at most two adjacent blocks (a term with a diagonal C that touches non-adjacent blocks,
such as the ℓ∞ input multipliers τ_i on the input and border blocks, is split into its rank-1
columns) and F0 has no entries outside the band.  That is the LipSDP LMI of every feedforward
network (math.md §2, §4, §6, §10): block k is the layer x^k, the multipliers of layer k couple
blocks k−1 and k.  Other problems raise :class:`~lipsdp.errors.SolverError` (use
``solver="native"``).

**Method (our implementation of textbook pieces).**  Log-barrier path following on

    f_μ(θ) = c^T θ / μ − log det S(θ) − Σ_{bounded} log(θ_i − lo_i) − Σ log(hi_i − θ_i),   S = −F(θ) ≻ 0,

(lo = 0 on the nonneg multipliers; a wide box |θ_i| ≤ 100 · max θ_start on the free ones, which
is not part of the problem: MaxMin's γ = −τ is a recession direction adding a PSD rank-one term,
along which the barrier alone is unbounded — measured γ, τ → ∓6.5e10 on 2FC-16, which the check's
rounding test then rejects), with Newton steps solved *matrix-free*: nothing of order n × n
(n = LMI order) or m × m (m = number of multipliers) is ever formed.

* S is block tridiagonal: a block LDL^T sweep P_0 = D_0, P_k = D_k − B_{k−1}^T P_{k−1}^{-1} B_{k−1}
  (B_k = S_{k,k+1}) tests feasibility and gives log det S = Σ log det P_k;
* *selected inversion* (Takahashi recursion) gives the band of Σ = S^{-1}:
  Σ_KK = P_K^{-1}, Σ_{k,k+1} = −P_k^{-1} B_k Σ_{k+1,k+1}, Σ_kk = P_k^{-1} − Σ_{k,k+1} B_k^T P_k^{-1};
  the gradient c_i/μ + tr(A_i Σ) + (bound terms) needs only that band (A_i = U_i C_i U_i^T);
* Hessian-vector products (H v)_i = tr(A_i Σ A(v) Σ) + (bound terms): the band of Σ A(v) Σ is
  the directional derivative of the selected inverse in the direction −A(v) (forward-mode
  differentiation of both recursions, ten w × w products per block);
* preconditioned CG for the Newton system (relative residual 1e-2).  Preconditioner
  M = J + Φ Φ^T: Φ Φ^T = tr(A_i Σ_r A_j Σ_r) is the part of the Hessian carried by the r = 12
  smallest eigenpairs of S (Σ_r = V diag(1/s) V^T, subspace iteration with the block factors,
  warm-started across Newton steps) — near the optimum a few eigenvalues of S are O(μ) and their
  part of the Hessian is dense across all layers; J is block diagonal over the layers (the exact
  Hessian of each layer's own multipliers minus Φ Φ^T's block, eigenvalues floored); M^{-1} by
  J^{-1/2} (I − Q diag(σ²/(1 + σ²)) Q^T) J^{-1/2} with Q, σ the SVD of J^{-1/2} Φ.  (Measured on
  dense copies at depth 3–5: block Jacobi alone leaves condition numbers 1e2–1e7, its block-
  tridiagonal extension is indefinite, the low-rank part brings it to ≈ 10 at centred points.)
* step: Armijo backtracking from the fraction-to-boundary step in S's own metric,
  S(θ + a d) ⪰ (1 − 0.5) S (the largest eigenvalue of L^{-1} A(d) L^{-T} by Lanczos on the block
  factors; 0.5 of the way to the bounds likewise).  Plain Armijo from a = 1 drove the iterates
  next to the boundary, where they crawled for tens of steps; the Dikin damping 1/(1 + λ) was
  too timid far from the path.  Every accepted point has a successful block Cholesky of S, so
  every iterate is strictly feasible;
* μ ← σ μ when the Newton decrement² ≤ 0.5 (σ from 0.02 to 0.5, adapted to the Newton steps
  the last stage took).  Right after a reduction, the decrement gives ν_eff = c^T H^{-1} c / μ²
  (≤ ν, the slope of the central path's objective in μ); stop when ν_eff μ ≤ tol · |c^T θ|
  (tol = max(options.tol, 1e-6)) or ν μ ≤ tol · |c^T θ|, or on ``time_limit`` / ``max_iters``
  (then the best — lowest-objective — strictly feasible iterate so far, status ``"time_limit"``).

**What it reaches.**  Every operation — factor, selected inversion, gradient, Hessian product,
preconditioner — is O(depth · w³): on the ECLipsE grid (width 80) one Hessian product costs
≈ 0.11 s at depth 100.  The *numbers* of Newton steps and CG iterations, however, grow with the
depth (from the generic start, benchmarks/chain_depth.py: depth 5: 89 Newton steps / 634 Hessian
products; depth 10: 132 / 1 965), so the total time is super-linear.  Most Newton steps go to the
first centring from the start point — equal multipliers per layer (the ECLipsE-Fast warm start of
``LMIProblem.start``) are far from any central point, the smallest Newton decrement² over μ is
≈ 1.6e4 at depth 100 — and to the stage where the objective is still ≈ ν μ above the optimum.
Where it finishes it matches the native solver's optimum and the golden values.  With the 48 s
solver budget of ``benchmarks/run.py`` it returns checked, time-limited bounds on the grid at
depth 20 / 50 / 100 of 0.0062–0.0097 / 0.95–1.13e-7 / 6.7e-10 (optimum at depth 20: 0.0058623,
reached in 88 s; native's 48 s answers 0.0158 / 1.81e-7 / 1.54e-9; ECLipsE-Fast 0.107 / 1.63e-7 /
1.38e-9) — so ``solver="auto"`` picks it for block-tridiagonal LMIs with ≥ 20 blocks and order
≥ 1500 (see benchmarks/results-run.md), but the SDP optimum at depth 100 in a minute is NOT
reached.

As for every backend, the returned θ is checked independently afterwards (lipsdp.check); a final
safeguard keeps −F(θ) a rounding-level margin inside the cone (the check's requirement), tested
by the same block Cholesky after diagonal scaling.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from lipsdp.errors import SolverError

from .base import Backend, SolveOptions, SolveResult
from .native import layerwise_start

__all__ = ["ChainBackend"]

_NOT_CHAIN = "use solver='native' (the chain solver needs a block-tridiagonal LMI)"


def _single_thread():
    """The recursions multiply many small (w × w) matrices: one BLAS thread is faster (and does not
    fight other processes for the cores).  threadpoolctl is optional."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing
        return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------
# column sets: dense, or a selection (one nonzero per column, e.g. the e_i of a neuron)
# ------------------------------------------------------------------------------------------------
class _Cols:
    def __init__(self, M):
        M = sp.csc_matrix(M)
        M.sort_indices()
        self.n, self.m = M.shape
        nnz = np.diff(M.indptr)
        self.sel = bool(self.m > 0 and np.all(nnz == 1))
        if self.sel:
            self.rows = M.indices.copy()
            self.vals = M.data.copy()
            self.unique = len(np.unique(self.rows)) == self.m
            self.ar = np.arange(self.m)
        self.D = np.ascontiguousarray(M.toarray())

    def left(self, Y):
        """Y @ cols."""
        if self.sel:
            return Y[:, self.rows] * self.vals
        return Y @ self.D

    def coldot(self, Z):
        """Column-wise Σ_r cols[r, j] Z[r, j]."""
        if self.sel:
            return Z[self.rows, self.ar] * self.vals
        return np.einsum("ij,ij->j", self.D, Z)


def _pairdot(Y, L, R):
    """t_j = L_j^T Y R_j."""
    if L.sel and R.sel:
        return Y[L.rows, R.rows] * (L.vals * R.vals)
    if R.sel:
        return L.coldot(Y[:, R.rows] * R.vals)
    if L.sel:
        return R.coldot(Y[L.rows, :].T * L.vals)
    return L.coldot(Y @ R.D)


def _outer(Out, L, R, w):
    """Out += L diag(w) R^T."""
    if L.sel and R.sel:
        np.add.at(Out, (L.rows, R.rows), w * L.vals * R.vals)
    elif R.sel and R.unique:
        Out[:, R.rows] += L.D * (w * R.vals)
    elif L.sel and L.unique:
        Out[L.rows, :] += (w * L.vals)[:, None] * R.D.T
    else:
        Out += (L.D * w) @ R.D.T


# ------------------------------------------------------------------------------------------------
# problem preparation
# ------------------------------------------------------------------------------------------------
class _Group:
    """The pieces whose rows lie in blocks (g, g+1) — or block g alone for the last block.

    Every piece θ_v U C U^T is stored as weighted column pairs: Σ_{a,b} C_ab u_a u_b^T
    = Σ_pairs coef · sym(u_p u_q^T) with p ≤ q (sym(x y^T) = (x y^T + y x^T)/2), so that
    tr(A_v Y) = Σ_{pairs of v} coef · u_p^T Y u_q for a symmetric Y.
    """

    def __init__(self, g, two, ntop, nbot, U, p, q, coef, var):
        self.g, self.two = g, two
        self.ntop, self.nbot = ntop, nbot
        self.p, self.q, self.coef, self.var = p, q, coef, var
        self.Ud = np.ascontiguousarray(U.toarray())  # local dense (ntop + nbot) × R
        U = sp.csc_matrix(U)
        Ut, Ub = U[:ntop, :], U[ntop:, :]
        has_t = np.diff(Ut.indptr) > 0
        has_b = np.diff(Ub.indptr) > 0 if two else np.zeros(U.shape[1], dtype=bool)
        # combos (a, b): pairs whose p has an a-part and q a b-part
        self.combos = []
        for a, Ua, ha in (("t", Ut, has_t), ("b", Ub, has_b)):
            for b, Ub_, hb in (("t", Ut, has_t), ("b", Ub, has_b)):
                idx = np.flatnonzero(ha[p] & hb[q])
                if idx.size == 0:
                    continue
                Lc = _Cols(Ua[:, p[idx]])
                Rc = _Cols(Ub_[:, q[idx]])
                same = bool(np.all(p[idx] == q[idx]) and a == b)
                self.combos.append((a, b, idx, Lc, Rc, same))
        # the variables of this group, for the preconditioner
        self.uvars, self.vinv = np.unique(var, return_inverse=True)
        S = np.zeros((len(p), len(self.uvars)))
        S[np.arange(len(p)), self.vinv] = coef
        self.Sc = S  # pairs × local vars, coefficients folded in

    def traces(self, Yd, Yo):
        """t_j = u_p^T Y u_q for the band matrix Y (diag blocks Yd, off blocks Yo)."""
        g = self.g
        t = np.zeros(len(self.p))
        for a, b, idx, Lc, Rc, same in self.combos:
            if a == "t" and b == "t":
                Y = Yd[g]
            elif a == "b" and b == "b":
                Y = Yd[g + 1]
            elif a == "t":
                Y = Yo[g]
            else:
                Y = Yo[g].T
            t[idx] += _pairdot(Y, Lc, Rc)
        return t

    def assemble(self, w, Od, Oo):
        """Add Σ_pairs w_j sym(u_p u_q^T) to the band (Od, Oo)."""
        g = self.g
        for a, b, idx, Lc, Rc, same in self.combos:
            wj = w[idx]
            if a == b:
                O = Od[g] if a == "t" else Od[g + 1]
                if same:
                    _outer(O, Lc, Rc, wj)
                else:
                    tmp = np.zeros_like(O)
                    _outer(tmp, Lc, Rc, 0.5 * wj)
                    O += tmp + tmp.T
            elif a == "t":
                _outer(Oo[g], Lc, Rc, 0.5 * wj)
            else:  # p bottom, q top: contributes ½ w q_t p_b^T to the (top, bottom) block
                _outer(Oo[g], Rc, Lc, 0.5 * wj)


class _Chain:
    """One block-tridiagonal LMI: −F0's band, its groups, and the block recursions."""

    def __init__(self, lmi, n_vars, gbase):
        n = int(lmi.size)
        blocks = [int(b) for b in lmi.blocks] if lmi.blocks and sum(lmi.blocks) == n else [n]
        self.n = n
        self.sizes = blocks
        self.K = K = len(blocks) - 1
        off = np.concatenate([[0], np.cumsum(blocks)]).astype(int)
        self.off = off
        blk_of_row = np.repeat(np.arange(K + 1), blocks)
        # --- F0 must lie on the band
        F0 = sp.coo_matrix(lmi.F0)
        if F0.nnz:
            bi, bj = blk_of_row[F0.row], blk_of_row[F0.col]
            bad = np.abs(bi - bj) > 1
            if np.any(bad & (F0.data != 0)):
                raise SolverError(f"chain solver: F0 has entries outside the block-tridiagonal band; {_NOT_CHAIN}")
        F0 = sp.csr_matrix(lmi.F0)
        self.S0d = [-F0[off[k]:off[k + 1], off[k]:off[k + 1]].toarray() for k in range(K + 1)]
        self.S0o = [-F0[off[k]:off[k + 1], off[k + 1]:off[k + 2]].toarray() for k in range(K)]
        # --- split terms into pieces that touch ≤ 2 adjacent blocks (vectorised over all terms)
        terms = [t for t in lmi.terms if t.U.shape[1] and np.any(t.C)]
        self.groups: list[_Group] = []
        self.gbase = gbase  # global group numbering (for the preconditioner's var homes)
        self.n_vars = n_vars
        if not terms:
            return
        Ubig = sp.hstack([sp.csc_matrix(t.U) for t in terms], format="csc")
        Ubig.sort_indices()
        ncol = Ubig.shape[1]
        nnzc = np.diff(Ubig.indptr)
        rb = blk_of_row[Ubig.indices]
        cmin = np.full(ncol, K + 1)
        cmax = np.full(ncol, -1)
        has = nnzc > 0
        if rb.size:
            starts = Ubig.indptr[:-1][has]
            cmin[has] = np.minimum.reduceat(rb, starts)
            cmax[has] = np.maximum.reduceat(rb, starts)
        ranks = np.array([t.U.shape[1] for t in terms])
        toff = np.concatenate([[0], np.cumsum(ranks)]).astype(int)
        tmin = np.minimum.reduceat(cmin, toff[:-1])
        tmax = np.maximum.reduceat(cmax, toff[:-1])
        P_p, P_q, P_c, P_v, P_g = [], [], [], [], []
        adj = (tmax - tmin <= 1) & (tmax >= 0)
        # adjacent terms, by rank: pairs (a ≤ b) of each C with coefficient C_ab + C_ba (a < b)
        for r in np.unique(ranks[adj]):
            idx = np.flatnonzero(adj & (ranks == r))
            Cs = np.stack([np.asarray(terms[i].C, dtype=float).reshape(r, r) for i in idx])
            ia, ib = np.triu_indices(r)
            coef = Cs[:, ia, ib] + np.where(ia != ib, Cs[:, ib, ia], 0.0)
            keep = coef != 0
            base = toff[idx][:, None]
            P_p.append((base + ia[None, :])[keep])
            P_q.append((base + ib[None, :])[keep])
            P_c.append(coef[keep])
            P_v.append(np.broadcast_to(np.array([terms[i].var for i in idx])[:, None], coef.shape)[keep])
            P_g.append(np.broadcast_to(tmin[idx][:, None], coef.shape)[keep])
        for i in np.flatnonzero(~adj & (tmax >= 0)):
            C = np.asarray(terms[i].C, dtype=float)
            if np.count_nonzero(C - np.diag(np.diag(C))):
                raise SolverError(
                    f"chain solver: a term (variable {terms[i].var}) couples non-adjacent blocks "
                    f"{int(tmin[i])} and {int(tmax[i])} through a non-diagonal C; {_NOT_CHAIN}")
            cols = toff[i] + np.arange(ranks[i])
            bad = (cmax[cols] - cmin[cols] > 1) & (np.diag(C) != 0)
            if np.any(bad):
                raise SolverError(f"chain solver: a rank-1 piece of variable {terms[i].var} spans non-adjacent "
                                  f"blocks; {_NOT_CHAIN}")
            use = (np.diag(C) != 0) & (cmax[cols] >= 0)
            P_p.append(cols[use])
            P_q.append(cols[use])
            P_c.append(np.diag(C)[use])
            P_v.append(np.full(int(use.sum()), terms[i].var))
            P_g.append(cmin[cols[use]])
        if not P_p:
            return
        pp, pq, pc = np.concatenate(P_p), np.concatenate(P_q), np.concatenate(P_c)
        pv, pg = np.concatenate(P_v).astype(int), np.concatenate(P_g).astype(int)
        Ucsr_cols = Ubig  # CSC: column slicing
        for g in np.unique(pg):
            sel = pg == g
            two = g < K
            lo, hi = off[g], off[g + 2] if two else off[g + 1]
            cols, inv = np.unique(np.concatenate([pp[sel], pq[sel]]), return_inverse=True)
            m = int(sel.sum())
            U = Ucsr_cols[:, cols][lo:hi, :]
            self.groups.append(_Group(int(g), two, blocks[g], blocks[g + 1] if two else 0, U,
                                      inv[:m], inv[m:], pc[sel], pv[sel]))

    # --- band assembly ------------------------------------------------------------------
    def zeros_band(self):
        s = self.sizes
        return [np.zeros((a, a)) for a in s], [np.zeros((s[k], s[k + 1])) for k in range(self.K)]

    def assemble(self, x, scale=1.0, base=False):
        """Band of scale·Σ_v x_v A_v (+ S0 = −F0 when ``base``)."""
        if base:
            Od = [a.copy() for a in self.S0d]
            Oo = [a.copy() for a in self.S0o]
        else:
            Od, Oo = self.zeros_band()
        for G in self.groups:
            G.assemble(scale * x[G.var] * G.coef, Od, Oo)
        return Od, Oo

    def S_band(self, theta):
        return self.assemble(theta, scale=-1.0, base=True)

    def traces(self, Yd, Yo):
        """tr(A_v Y) per variable, Y symmetric band."""
        out = np.zeros(self.n_vars)
        for G in self.groups:
            t = G.traces(Yd, Yo)
            out += np.bincount(G.var, G.coef * t, minlength=self.n_vars)
        return out

    # --- block recursions -------------------------------------------------------------------
    @staticmethod
    def factor(Sd, So):
        """Block LDL^T sweep: Cholesky factors of the pivots P_k and G_k = P_k^{-1} B_k, or None."""
        K = len(Sd) - 1
        Ls, Gs = [], []
        P = Sd[0]
        for k in range(K + 1):
            try:
                L = sla.cholesky(P, lower=True, check_finite=False)
            except (np.linalg.LinAlgError, sla.LinAlgError, ValueError):
                return None
            if not np.all(np.isfinite(L)):
                return None
            Ls.append(L)
            if k < K:
                Gk = sla.cho_solve((L, True), So[k], check_finite=False)
                Gs.append(Gk)
                P = Sd[k + 1] - So[k].T @ Gk
        return Ls, Gs

    @staticmethod
    def logdet(fac):
        return float(sum(2.0 * np.sum(np.log(np.diag(L))) for L in fac[0]))

    @staticmethod
    def selinv(fac, So):
        """Band of Σ = S^{-1}, plus the pivots' inverses and Σ's second off-diagonal."""
        Ls, Gs = fac
        K = len(Ls) - 1
        Pinv = []
        for L in Ls:
            Li = sla.solve_triangular(L, np.eye(L.shape[0]), lower=True, check_finite=False)
            Pinv.append(Li.T @ Li)
        Sd = [None] * (K + 1)
        Soff = [None] * K
        Sd[K] = Pinv[K]
        for k in range(K - 1, -1, -1):
            Soff[k] = -Gs[k] @ Sd[k + 1]
            A = Pinv[k] - Soff[k] @ Gs[k].T
            Sd[k] = 0.5 * (A + A.T)
        return Sd, Soff, Pinv

    @staticmethod
    def dselinv(fac, So, Pinv, Sd, Soff, dD, dB):
        """Band of dΣ for dS = (dD, dB): forward-mode derivative of the two recursions.
        For dS = −A(v) this is the band of Σ A(v) Σ."""
        Ls, Gs = fac
        K = len(Ls) - 1
        dP = [None] * (K + 1)
        dG = [None] * K
        dP[0] = dD[0]
        for k in range(K):
            dG[k] = Pinv[k] @ (dB[k] - dP[k] @ Gs[k])
            dP[k + 1] = dD[k + 1] - dB[k].T @ Gs[k] - So[k].T @ dG[k]
        dSd = [None] * (K + 1)
        dSo = [None] * K
        X = -Pinv[K] @ dP[K] @ Pinv[K]
        dSd[K] = 0.5 * (X + X.T)
        for k in range(K - 1, -1, -1):
            dSo[k] = -dG[k] @ Sd[k + 1] - Gs[k] @ dSd[k + 1]
            A = -Pinv[k] @ dP[k] @ Pinv[k] - dSo[k] @ Gs[k].T - Soff[k] @ dG[k].T
            dSd[k] = 0.5 * (A + A.T)
        return dSd, dSo


# ------------------------------------------------------------------------------------------------
# preconditioner: block Jacobi over layers + the low-rank part of the Hessian from Σ's top modes
# ------------------------------------------------------------------------------------------------
def _chain_solve(fac, Pinv, b):
    """S^{-1} b (b: n × k, split by blocks) from the block LDL^T factors."""
    Ls, Gs = fac
    K = len(Ls) - 1
    w = [None] * (K + 1)
    w[0] = b[0]
    for k in range(K):
        w[k + 1] = b[k + 1] - Gs[k].T @ w[k]
    x = [None] * (K + 1)
    x[K] = Pinv[K] @ w[K]
    for k in range(K - 1, -1, -1):
        x[k] = Pinv[k] @ w[k] - Gs[k] @ x[k + 1]
    return x


def _chain_mul(Sd, So, x):
    """S x for the band (Sd, So), x split by blocks."""
    K = len(Sd) - 1
    y = [Sd[k] @ x[k] for k in range(K + 1)]
    for k in range(K):
        y[k] += So[k] @ x[k + 1]
        y[k + 1] += So[k].T @ x[k]
    return y


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


def _max_growth(ch, fac, Ad_d, Ad_o):
    """λ_max(L^{-1} A L^{-T}) for S = L L^T (block Cholesky) and the band A: the step θ + α d keeps
    S(θ + α d) = S − α A(d) ⪰ (1 − α λ_max) S.  A few Lanczos steps (scipy eigsh)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    Ls, Gs = fac
    K = ch.K
    off = ch.off
    n = ch.n

    def op(x):
        x = np.asarray(x).ravel()
        xb = [x[off[k]:off[k + 1]] for k in range(K + 1)]
        # y = L^{-T} x:  C^T w = x per block, then L̃^T y = w (backward)
        w = [sla.solve_triangular(Ls[k], xb[k], lower=True, trans="T", check_finite=False) for k in range(K + 1)]
        y = [None] * (K + 1)
        y[K] = w[K]
        for k in range(K - 1, -1, -1):
            y[k] = w[k] - Gs[k] @ y[k + 1]
        v = _chain_mul(Ad_d, Ad_o, y)
        # z = L^{-1} v: L̃ u = v (forward), then C z = u per block
        u = [None] * (K + 1)
        u[0] = v[0]
        for k in range(K):
            u[k + 1] = v[k + 1] - Gs[k].T @ u[k]
        z = [sla.solve_triangular(Ls[k], u[k], lower=True, check_finite=False) for k in range(K + 1)]
        return np.concatenate(z)

    if n <= 40:
        M = np.column_stack([op(e) for e in np.eye(n)])
        return float(np.linalg.eigvalsh(0.5 * (M + M.T))[-1])
    A = LinearOperator((n, n), matvec=op, dtype=float)
    try:
        lam = float(eigsh(A, k=1, which="LA", tol=1e-2, ncv=min(n, 20), maxiter=200,
                          return_eigenvectors=False)[0])
        return lam + 0.05 * abs(lam)
    except Exception:
        return float("inf")


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


def homes_vars(chains):
    return np.unique(np.concatenate([G.var for ch in chains for G in ch.groups] or [np.zeros(0, dtype=int)]))


class ChainBackend(Backend):
    """Barrier path following with matrix-free Newton-CG on block-tridiagonal LMIs (linear in depth)."""

    name = "chain"
    REQUIRED_MODULES = ("numpy", "scipy")
    description = ("lipsdp's linear-in-depth barrier solver for block-tridiagonal (layer-chain) LMIs: "
                   "selected inversion + Newton-CG, strictly feasible iterates (anytime)")

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

    @staticmethod
    def applies(problem) -> bool:
        """Whether every LMI of ``problem`` is block tridiagonal in the sense this solver needs."""
        try:
            for lmi in problem.lmis:
                _Chain(lmi, problem.n_vars, 0)
        except SolverError:
            return False
        return True

    def solve(self, problem, options: SolveOptions) -> SolveResult:
        with _single_thread():
            return self._guarded(self._solve, problem, options)

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _factor_all(chains, theta):
        out = []
        for ch in chains:
            Sd, So = ch.S_band(theta)
            fac = ch.factor(Sd, So)
            if fac is None:
                return None
            out.append((Sd, So, fac))
        return out

    def _start(self, problem, chains):
        """A strictly feasible θ (NativeBackend._start's rule, with the block Cholesky as test):
        nonneg multipliers 2·q^depth (depth = distance of the term's own block from the end), free
        ones 0, the objective variables 4^k with the smallest feasible k (bisection)."""
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
            return self._factor_all(chains, th) is not None

        th = layerwise_start(depth, problem.nonneg, obj, feasible, problem.start)
        if th is not None:
            return th
        raise SolverError(
            "chain solver: could not find a strictly feasible starting point (tried layer-wise multipliers "
            "and raising the objective variables); try solver='native'")

    # ------------------------------------------------------------------------------------------
    def _solve(self, problem, options, t0):
        nv = problem.n_vars
        c = np.asarray(problem.c, dtype=float)
        nn = np.flatnonzero(problem.nonneg)
        chains = []
        gbase = 0
        for lmi in problem.lmis:
            ch = _Chain(lmi, nv, gbase)
            chains.append(ch)
            gbase += ch.K + 2
        homes = np.full(nv, -1, dtype=int)
        for ch in chains:
            for G in ch.groups:
                h = ch.gbase + G.g
                cur = homes[G.uvars]
                homes[G.uvars] = np.where((cur < 0) | (cur > h), h, cur)
        pre = _Precond(homes, nv)
        theta = self._start(problem, chains)
        theta0 = theta.copy()
        best = (float(c @ theta), theta.copy())  # the anytime answer: the lowest objective so far
        # bounds: θ ≥ 0 on the nonneg multipliers; |θ| ≤ R on the free ones.  The box is not part of
        # the problem: it keeps the barrier bounded where the LMI has a recession direction (MaxMin's
        # γ = −τ adds a PSD rank-one term: the barrier would push them to ±∞, measured 6.5e10 on
        # 2FC-16, which then fails the check's rounding test).  R is far above the start's scale.
        lo = np.full(nv, -np.inf)
        hi = np.full(nv, np.inf)
        lo[nn] = 0.0
        free = np.setdiff1d(np.flatnonzero(np.isin(np.arange(nv), homes_vars(chains))), nn)
        scale = max(1.0, float(np.max(np.abs(theta0[nn]))) if nn.size else 1.0)
        hi[free] = self.BOX * scale
        lo[free] = -self.BOX * scale
        bl, bh = np.flatnonzero(np.isfinite(lo)), np.flatnonzero(np.isfinite(hi))
        nu = float(sum(ch.n for ch in chains) + len(bl) + len(bh))
        verbose = options.verbose
        deadline = None if options.time_limit is None else t0 + float(options.time_limit)
        max_newton = options.max_iters or 500
        gap_tol = max(float(options.tol), self.MIN_GAP)

        facs = self._factor_all(chains, theta)

        def fval(th, fs, mu):
            v = float(c @ th) / mu - sum(_Chain.logdet(f[2]) for f in fs)
            v -= float(np.sum(np.log(th[bl] - lo[bl]))) + float(np.sum(np.log(hi[bh] - th[bh])))
            return v

        status, msg = "optimal_inaccurate", ""
        mu = None
        sigma = self.SIGMA
        it = n_hv = 0
        t_cg = t_pre = 0.0
        centred: list = []
        Vprev = [None] * len(chains)
        failed = False
        stage_steps = 0
        nu_eff = None
        just_reduced = None  # (μ_old, μ_new) right after a reduction
        while True:
            # --- state at θ: selected inverse, gradient, preconditioner
            tp = time.perf_counter()
            states = []
            gl = np.zeros(nv)
            for ch, (Sd, So, fac) in zip(chains, facs):
                Sig_d, Sig_o, Pinv = ch.selinv(fac, So)
                states.append(dict(Sd=Sig_d, Soff=Sig_o, Pinv=Pinv, fac=fac, So=So, Sd_S=Sd))
                gl += ch.traces(Sig_d, Sig_o)
            gb = gl.copy()
            Dn = np.zeros(nv)
            gb[bl] -= 1.0 / (theta[bl] - lo[bl])
            Dn[bl] += 1.0 / (theta[bl] - lo[bl]) ** 2
            gb[bh] += 1.0 / (hi[bh] - theta[bh])
            Dn[bh] += 1.0 / (hi[bh] - theta[bh]) ** 2
            Hd = _hess_blocks(chains, states, pre, nv)
            eigs = []
            for i, (ch, st) in enumerate(zip(chains, states)):
                r = min(self.RANK, ch.n)
                V, s = _small_eigs(ch, st, r, Vprev[i])
                Vprev[i] = V
                eigs.append((V, s))
            Phi = _lowrank_factor(chains, eigs, nv)
            pre.build(Hd, Dn, Phi)
            t_pre += time.perf_counter() - tp

            def Hv(v):
                out = Dn * v
                for ch, st in zip(chains, states):
                    dD, dB = ch.assemble(v, scale=-1.0)
                    Yd, Yo = ch.dselinv(st["fac"], st["So"], st["Pinv"], st["Sd"], st["Soff"], dD, dB)
                    out += ch.traces(Yd, Yo)
                return out

            if mu is None:
                mu = max(abs(float(c @ theta)), 1e-300) / nu
            while True:
                g = c / mu + gb
                tc = time.perf_counter()
                d, ncg = _pcg(Hv, pre.solve, -g, self.CG_TOL, self.CG_MAXIT, deadline)
                if ncg < 0 and pre.Q is not None:  # preconditioner broke down: without the low-rank part
                    pre.drop_lowrank()
                    d, ncg = _pcg(Hv, pre.solve, -g, self.CG_TOL, self.CG_MAXIT, deadline)
                if ncg < 0 or not np.all(np.isfinite(d)):
                    msg = "Newton system could not be solved (numerical limit)"
                    failed = True
                    break
                t_cg += time.perf_counter() - tc
                n_hv += ncg
                lam2 = max(-float(g @ d), 0.0)
                obj = float(c @ theta)
                if just_reduced is not None:
                    # Newton step right after μ → μ': d ≈ −(1/μ' − 1/μ) H^{-1} c, so the decrement
                    # gives ν_eff = c^T H^{-1} c / μ² (the slope of the central path's objective)
                    mo, mn = just_reduced
                    nu_eff = lam2 / (mo / mn - 1.0) ** 2
                    just_reduced = None
                    if nu_eff * mo <= gap_tol * max(abs(obj), 1e-300):
                        mu = mo
                        status = "optimal"
                        break
                if verbose:
                    ne = "-" if nu_eff is None else f"{nu_eff:.3g}"
                    print(f"[chain] it {it:3d} obj {obj:.9g} mu {mu:.3e} nu_eff {ne} lam2 {lam2:.2e} cg {ncg} "
                          f"r {Phi.shape[1]} clamp {pre.clamped} t {time.perf_counter() - t0:.2f}s", flush=True)
                if lam2 <= self.CENTRED:
                    if not centred or not np.array_equal(centred[-1][1], theta):
                        centred.append((obj, theta.copy()))
                    if nu * mu <= gap_tol * max(abs(obj), 1e-300):
                        status = "optimal"
                        break
                    # adapt the reduction to the work the last stage took
                    if stage_steps <= 2:
                        sigma = max(self.SIGMA_MIN, sigma * 0.5)
                    elif stage_steps >= 5:
                        sigma = min(0.5, sigma * 2.0)
                    stage_steps = 0
                    just_reduced = (mu, mu * sigma)
                    mu *= sigma
                    continue
                break
            if status == "optimal" or failed:
                break
            if deadline is not None and time.perf_counter() > deadline:
                status, msg = "time_limit", f"time limit {options.time_limit} s reached"
                break
            if it >= max_newton:
                status, msg = ("time_limit", f"iteration limit {max_newton} reached") if options.max_iters else \
                    ("optimal_inaccurate", "iteration limit reached")
                break
            # --- line search: strictly feasible, Armijo on f_μ
            it += 1
            stage_steps += 1
            amax = 1.0
            neg = d[bl] < 0
            if np.any(neg):
                amax = min(amax, 0.99 * float(np.min((lo[bl][neg] - theta[bl][neg]) / d[bl][neg])))
            pos = d[bh] > 0
            if np.any(pos):
                amax = min(amax, 0.99 * float(np.min((hi[bh][pos] - theta[bh][pos]) / d[bh][pos])))
            # damped Newton: a step within the Dikin ellipsoid (1/(1 + λ)) never runs into the
            # boundary; Armijo backtracking from min(1, DAMP/(1 + λ)) — larger first tries measured
            # to drive the iterates close to the boundary, where they then crawl along it
            # fraction to the boundary in S's own metric: S(θ + a d) ⪰ (1 − FRAC) S, and the same for
            # the bounds (a Dikin-type damping 1/(1 + λ) instead was measured far too timid)
            grow = 0.0
            for ch, st in zip(chains, states):
                Ad, Ao = ch.assemble(d)
                grow = max(grow, _max_growth(ch, st["fac"], Ad, Ao))
            cap = self.FRAC / grow if grow > 0 else 1.0
            fb = 1.0
            neg = d[bl] < 0
            if np.any(neg):
                fb = min(fb, self.FRAC * float(np.min((lo[bl][neg] - theta[bl][neg]) / d[bl][neg])))
            pos = d[bh] > 0
            if np.any(pos):
                fb = min(fb, self.FRAC * float(np.min((hi[bh][pos] - theta[bh][pos]) / d[bh][pos])))
            a = min(amax, cap, fb, 1.0)
            f0 = fval(theta, facs, mu)
            slope = float(g @ d)
            accepted = False
            for _ in range(60):
                th_new = theta + a * d
                if np.any(th_new[bl] <= lo[bl]) or np.any(th_new[bh] >= hi[bh]):
                    a *= 0.5
                    continue
                fs = self._factor_all(chains, th_new)
                if fs is not None:
                    f1 = fval(th_new, fs, mu)
                    if np.isfinite(f1) and f1 <= f0 + 1e-2 * a * slope:
                        accepted = True
                        break
                a *= 0.5
            if not accepted:
                msg = "line search failed (numerical limit)"
                break
            theta, facs = th_new, fs
            if float(c @ theta) < best[0]:
                best = (float(c @ theta), theta.copy())
        if verbose:
            print(f"[chain] {it} Newton steps, {n_hv} Hessian products ({t_cg:.2f}s in CG, {t_pre:.2f}s "
                  f"preconditioner), status {status} {msg}", flush=True)
        # a centring step at fixed μ may raise the objective: a stopped run returns its best iterate
        if status != "optimal" and best[0] < float(c @ theta):
            theta = best[1]
        th = self._safeguard(chains, c, theta, centred, theta0, nn)
        cands = []
        # more central iterates for the caller's check to try (each costs one dense check), only
        # when the final iterate itself failed the margin test
        if not np.array_equal(th, theta) and sum(ch.n for ch in chains) <= 2000:
            cands = [t_ for _, t_ in sorted(centred, key=lambda v: v[0])[:1] if not np.array_equal(t_, th)]
        return SolveResult(status, th, float(c @ th), time.perf_counter() - t0, iterations=it, message=msg,
                           extra={"candidates": cands, "hessian_products": n_hv, "mu": mu, "nu_eff": nu_eff})

    # ------------------------------------------------------------------------------------------
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
