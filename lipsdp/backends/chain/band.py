"""The block-tridiagonal structure the chain solver works on, and its algebra (linear in depth).

An LMI ``F(θ) = F0 + Σ_i θ_i U_i C_i U_i^T ⪯ 0`` with coordinate blocks ``LMI.blocks`` is *block
tridiagonal* for this solver when F0 has no entries outside the band |k − l| ≤ 1 and every term
touches at most two adjacent blocks — a term with a diagonal C whose columns each touch at most
two adjacent blocks is split into those rank-1 columns (the ℓ∞ input multipliers τ_i on the input
and border blocks).  :class:`_Layout` decides this from the declared structure alone (block sizes,
the supports of F0 and of the U_i); :class:`_Chain` then stores S = −F(θ) as its band: per block
pair, the weighted column pairs of the terms (:class:`_Group`).

The algebra on the band, every operation O(depth · w³) for blocks of width w (math.md §10 gives
the same traces for a dense S):

* block LDL^T sweep P_0 = D_0, P_k = D_k − B_{k−1}^T P_{k−1}^{-1} B_{k−1} (B_k = S_{k,k+1}): tests
  S ≻ 0 (every pivot has a Cholesky factor) and gives log det S = Σ_k log det P_k;
* selected inversion (Takahashi recursion), the band of Σ = S^{-1}:
  Σ_KK = P_K^{-1}, Σ_{k,k+1} = −P_k^{-1} B_k Σ_{k+1,k+1}, Σ_kk = P_k^{-1} − Σ_{k,k+1} B_k^T P_k^{-1};
* its forward-mode derivative: for dS = −A(v) the band of Σ A(v) Σ (Hessian-vector products);
* traces tr(A_v Y) for a band Y, which need only Y's band;
* λ_max(L^{-1} A L^{-T}) by Lanczos on the block factors (fraction to the boundary).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from lipsdp.errors import SolverError

__all__ = ["NOT_CHAIN", "band_violation", "factor_all", "homes_vars"]

NOT_CHAIN = "use solver='native' (the chain solver needs a block-tridiagonal LMI)"


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

# ------------------------------------------------------------------------------------------------
# structure: which blocks each term column touches (no numeric work on the terms)
# ------------------------------------------------------------------------------------------------
class _Layout:
    """One LMI's declared structure as the chain solver sees it: the coordinate blocks, and for
    every column of the (nonzero) terms the first and last block its rows touch."""

    def __init__(self, lmi):
        n = int(lmi.size)
        blocks = [int(b) for b in lmi.blocks] if lmi.blocks and sum(lmi.blocks) == n else [n]
        self.n = n
        self.sizes = blocks
        self.K = K = len(blocks) - 1
        self.off = np.concatenate([[0], np.cumsum(blocks)]).astype(int)
        self.blk_of_row = blk_of_row = np.repeat(np.arange(K + 1), blocks)
        self.F0 = lmi.F0
        self.terms = terms = [t for t in lmi.terms if t.U.shape[1] and np.any(t.C)]
        if not terms:
            return
        Ubig = sp.hstack([t.U if sp.isspmatrix_csc(t.U) else sp.csc_matrix(t.U) for t in terms], format="csc")
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
        self.Ubig, self.cmin, self.cmax, self.ranks, self.toff = Ubig, cmin, cmax, ranks, toff
        self.tmin = tmin = np.minimum.reduceat(cmin, toff[:-1])
        self.tmax = tmax = np.maximum.reduceat(cmax, toff[:-1])
        #: terms within two adjacent blocks, and the others (to be split into rank-1 columns)
        self.adj = (tmax - tmin <= 1) & (tmax >= 0)
        self.split = np.flatnonzero(~self.adj & (tmax >= 0))

    def violation(self) -> str | None:
        """Why the LMI is not block tridiagonal in the solver's sense (the first reason), or None."""
        F0 = sp.coo_matrix(self.F0)
        if F0.nnz:
            bi, bj = self.blk_of_row[F0.row], self.blk_of_row[F0.col]
            bad = np.abs(bi - bj) > 1
            if np.any(bad & (F0.data != 0)):
                return f"chain solver: F0 has entries outside the block-tridiagonal band; {NOT_CHAIN}"
        if not self.terms:
            return None
        for i in self.split:
            t = self.terms[i]
            C = np.asarray(t.C, dtype=float)
            if np.count_nonzero(C - np.diag(np.diag(C))):
                return (f"chain solver: a term (variable {t.var}) couples non-adjacent blocks "
                        f"{int(self.tmin[i])} and {int(self.tmax[i])} through a non-diagonal C; {NOT_CHAIN}")
            cols = self.toff[i] + np.arange(self.ranks[i])
            bad = (self.cmax[cols] - self.cmin[cols] > 1) & (np.diag(C) != 0)
            if np.any(bad):
                return f"chain solver: a rank-1 piece of variable {t.var} spans non-adjacent blocks; {NOT_CHAIN}"
        return None


def band_violation(lmi) -> str | None:
    """Why ``lmi`` is not block tridiagonal for the chain solver, or None (from its structure only)."""
    return _Layout(lmi).violation()


class _Chain:
    """One block-tridiagonal LMI: −F0's band, its groups, and the block recursions."""

    def __init__(self, lmi, n_vars, gbase):
        lay = _Layout(lmi)
        why = lay.violation()
        if why is not None:
            raise SolverError(why)
        n, blocks, K, off = lay.n, lay.sizes, lay.K, lay.off
        self.n = n
        self.sizes = blocks
        self.K = K
        self.off = off
        F0 = sp.csr_matrix(lmi.F0)
        self.S0d = [-F0[off[k]:off[k + 1], off[k]:off[k + 1]].toarray() for k in range(K + 1)]
        self.S0o = [-F0[off[k]:off[k + 1], off[k + 1]:off[k + 2]].toarray() for k in range(K)]
        # --- split terms into pieces that touch ≤ 2 adjacent blocks (vectorised over all terms)
        terms = lay.terms
        self.groups: list[_Group] = []
        self.gbase = gbase  # global group numbering (for the preconditioner's var homes)
        self.n_vars = n_vars
        if not terms:
            return
        Ubig, cmin, cmax, ranks, toff = lay.Ubig, lay.cmin, lay.cmax, lay.ranks, lay.toff
        tmin, adj = lay.tmin, lay.adj
        P_p, P_q, P_c, P_v, P_g = [], [], [], [], []
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
        # the other terms: their rank-1 columns, each within two adjacent blocks (_Layout.violation)
        for i in lay.split:
            C = np.asarray(terms[i].C, dtype=float)
            cols = toff[i] + np.arange(ranks[i])
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



def factor_all(chains, theta):
    """The band of S(θ) and its block factors for every LMI, or None when one S(θ) is not ≻ 0."""
    out = []
    for ch in chains:
        Sd, So = ch.S_band(theta)
        fac = ch.factor(Sd, So)
        if fac is None:
            return None
        out.append((Sd, So, fac))
    return out


def homes_vars(chains):
    """The variables that appear in some group of ``chains``."""
    return np.unique(np.concatenate([G.var for ch in chains for G in ch.groups] or [np.zeros(0, dtype=int)]))


# ------------------------------------------------------------------------------------------------
# products and solves with the band and its factors
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
        # a fixed start vector: ARPACK's random one made runs differ in the 9th digit
        lam = float(eigsh(A, k=1, which="LA", tol=1e-2, ncv=min(n, 20), maxiter=200,
                          v0=np.ones(n) / np.sqrt(n), return_eigenvectors=False)[0])
        return lam + 0.05 * abs(lam)
    except Exception:
        return float("inf")
