"""SDP assembly: from a network and its quadratic constraints to a solver-neutral LMI problem.

Every formulation lipsdp solves has the same shape::

    minimise  c^T θ   subject to   F0 + Σ_i θ_i U_i C_i U_i^T ⪯ 0   (one or more LMIs),
                                   θ_i ≥ 0 for the multipliers marked non-negative,

where every U_i is sparse and tall-thin (the multipliers of LipSDP are rank ≤ 2 and touch at most
two layer blocks, math.md §10).  :class:`LMIProblem` holds exactly that, so any backend (cvxpy
+ a conic solver, or lipsdp's own interior-point method) can consume it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

__all__ = ["LMITerm", "LMI", "LMIProblem", "Layout", "lift_terms"]


@dataclass
class LMITerm:
    """θ[var] · U C U^T inside one LMI."""

    var: int
    U: sp.csc_matrix
    C: np.ndarray


@dataclass
class LMI:
    """F0 + Σ θ_var U C U^T ⪯ 0 of order ``size``; ``blocks`` are its coordinate blocks."""

    size: int
    F0: sp.csr_matrix
    terms: list[LMITerm]
    blocks: list[int] = field(default_factory=list)

    def term_matrices(self) -> sp.csc_matrix:
        """Sparse (size², n_terms) matrix whose column j is vec(U_j C_j U_j^T) (column-major)."""
        rows, cols, vals = [], [], []
        n = self.size
        for j, t in enumerate(self.terms):
            F = (t.U @ sp.csc_matrix(t.C) @ t.U.T).tocoo()
            keep = F.data != 0
            rows.append(F.row[keep] + n * F.col[keep])
            cols.append(np.full(int(keep.sum()), j))
            vals.append(F.data[keep])
        if not rows:
            return sp.csc_matrix((n * n, 0))
        return sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, len(self.terms))
        )

    def evaluate(self, theta: np.ndarray) -> np.ndarray:
        """Dense F(θ) (for tests and small problems)."""
        F = self.F0.toarray().astype(float)
        for t in self.terms:
            U = t.U.toarray()
            F += theta[t.var] * (U @ t.C @ U.T)
        return F


@dataclass
class LMIProblem:
    """minimise c^T θ s.t. every LMI ⪯ 0 and θ[nonneg] ≥ 0.

    ``layout`` maps a name (``"rho"``, ``"layer1.lambda"``, ...) to its slice of θ.
    ``start`` optionally suggests a strictly feasible θ (a warm start; backends that can use one
    test it first).
    """

    n_vars: int
    c: np.ndarray
    nonneg: np.ndarray
    lmis: list[LMI]
    layout: dict[str, slice]
    start: np.ndarray | None = None
    rewrites: tuple = ()  # the reductions that produced it from the formulation's problem
    #: True for a chordally decomposed problem (lipsdp.chordal); backends that need the
    #: monolithic LMI refuse it in their ``accepts``
    decomposed: ClassVar[bool] = False

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(theta[s], dtype=float) for k, s in self.layout.items()}

    @property
    def max_order(self) -> int:
        return max(lmi.size for lmi in self.lmis)

    def sizes(self) -> dict:
        return {
            "n_vars": int(self.n_vars),
            "lmi_orders": [int(lmi.size) for lmi in self.lmis],
            "n_terms": int(sum(len(lmi.terms) for lmi in self.lmis)),
        }


class Layout:
    """Where every multiplier lives in θ: named leading blocks (``head``: ρ, τ, …) followed by each
    QC's parameters, named ``layer{k}.{param}`` (k = 1, 2, … in QC order)."""

    def __init__(self, head, qcs):
        self.slices: dict[str, slice] = {}
        nonneg: list = []
        pos = 0
        for name, size, nn in head:
            self.slices[name] = slice(pos, pos + int(size))
            nonneg += [bool(nn)] * int(size)
            pos += int(size)
        self.offsets: list[dict[str, int]] = []
        for k, qc in enumerate(qcs, start=1):
            offs = {}
            for p in qc.params():
                self.slices[f"layer{k}.{p.name}"] = slice(pos, pos + p.size)
                offs[p.name] = pos
                nonneg += [p.nonneg] * p.size
                pos += p.size
            self.offsets.append(offs)
        self.n_vars = pos
        self.nonneg = np.array(nonneg, dtype=bool)

    def objective(self, name: str = "rho") -> np.ndarray:
        c = np.zeros(self.n_vars)
        c[self.slices[name]] = 1.0
        return c

    def layers(self, theta, qcs) -> list[dict]:
        """The QC multipliers in θ, projected onto their admissible set (≥ 0 where required)."""
        out = []
        for k, qc in enumerate(qcs, start=1):
            out.append(qc.project({p.name: np.asarray(theta[self.slices[f"layer{k}.{p.name}"]], dtype=float)
                                   for p in qc.params()}))
        return out


def lift_terms(qc, W_in, off_in: int, off_out: int, size: int, var_offset: dict[str, int]) -> list[LMITerm]:
    """Lift a layer QC on (Δv, Δφ) = (W_in Δx^{k−1}, Δx^k) into the big LMI's coordinates.

    For a QC term G C G^T with G = [G_v; G_φ], the lifted factor is
    U = E_{k−1}^T W_in^T G_v + E_k^T G_φ (E_k selects block k).
    """
    n = qc.n
    terms = qc.terms()
    if not terms:
        return []
    # all terms at once (one sparse product instead of one dense product per multiplier)
    widths = np.array([t.G.shape[1] for t in terms])
    cstart = np.concatenate([[0], np.cumsum(widths)])
    G = sp.hstack([t.G for t in terms], format="csc")
    Wt = W_in.to_sparse().T if hasattr(W_in, "to_sparse") else sp.csc_matrix(np.asarray(W_in).T)
    top = sp.csc_matrix(Wt) @ G[:n]
    top = top.tocoo()
    bot = G[n:].tocoo()
    rows = np.concatenate([top.row + off_in, bot.row + off_out])
    cols = np.concatenate([top.col, bot.col])
    vals = np.concatenate([top.data, bot.data])
    Uall = sp.csc_matrix((vals, (rows, cols)), shape=(size, int(cstart[-1])))
    Uall.eliminate_zeros()
    Uall.sort_indices()
    ip, ind, dat = Uall.indptr, Uall.indices, Uall.data
    out = []
    for t, a, b in zip(terms, cstart[:-1], cstart[1:]):
        p0, p1 = ip[a], ip[b]
        U = sp.csc_matrix((dat[p0:p1], ind[p0:p1], ip[a:b + 1] - p0), shape=(size, int(b - a)))
        out.append(LMITerm(var_offset[t.param] + t.index, U, t.C))
    return out
