"""Exact chordal decomposition of an :class:`~lipsdp.assembly.LMIProblem` (math.md §3).

The LipSDP LMI of a feedforward network is block-tridiagonal in the layer blocks
(x^0, x^1, …, x^l): its sparsity graph on the blocks is a path, which is chordal with maximal
cliques C_k = (x^k, x^{k+1}).  For a matrix M with a chordal sparsity pattern and cliques
C_1..C_p (Agler, Helton, McCullough, Rodman 1988; Grone et al. 1984; the "range-space
conversion" of Kim, Kojima, Mevissen, Yamashita, Math. Program. 2011; applied to LipSDP by
Xue, Lindemann, Liu, Tenenbaum, Mangharam, Pappas, "Chordal Sparsity for Lipschitz Constant
Estimation of Deep Neural Networks", CDC 2022, arXiv 2204.00846)::

    M ⪯ 0   ⇔   M = Σ_j E_j^T M_j E_j  with every M_j ⪯ 0       (E_j selects clique C_j).

Construction (our implementation of that theorem).  Every term θ_i U_i C_i U_i^T of the LMI, and
every nonzero block of F0, is *assigned* to one clique that contains its block support (terms
touching blocks k and k+1 go to clique (k, k+1); the ρ term on block 0 goes to the first clique;
a block-diagonal piece of F0 on block k goes to the first clique containing k).  Call A_j(θ) the
sum of what clique j received, so F(θ) = Σ_j E_j^T A_j(θ) E_j.  For every edge (a, b) of a clique
tree with separator S = C_a ∩ C_b a free symmetric matrix X_e on S is added to clique a and
subtracted from clique b::

    F_j(θ, X) = A_j(θ) + Σ_{e=(j,·)} E_S^T X_e E_S − Σ_{e=(·,j)} E_S^T X_e E_S  ⪯ 0   for every j.

The X_e cancel in the sum, so Σ_j E_j^T F_j E_j = F(θ) for all X: decomposed-feasible ⇒ F(θ) ⪯ 0.
Conversely, if F(θ) ⪯ 0 the theorem gives M_j ⪯ 0 with the same sum, and by leaf elimination on
the clique tree (a vertex of a leaf clique outside its separator lies in no other clique, by
the running-intersection property) M_j − A_j is exactly such a combination of separator
matrices.  So the decomposed problem has the *same optimal value*; the original θ is the first
``n_vars`` entries of the new θ and the formulation's ``recover`` / ``check`` work unchanged (the
independent check is always done on the monolithic LMI, so the decomposition cannot weaken
soundness).  :func:`separators_from_monolithic` builds consistent X_e from a monolithic point
(block Schur complements), which tests use and which can warm-start a decomposed solve.

Each X_e is parametrised by its upper-triangle entries: one free scalar per entry, with a
rank ≤ 2 term (x_ab (e_a e_b^T + e_b e_a^T), or x_aa e_a e_a^T).

**When it hurts.**  The separators add Σ_e s_e (s_e + 1)/2 free multipliers (s_e = order of
separator e): a 784-100×5-10 net gets 4 × 5 050 = 20 200 on top of its 501.  Solvers whose cost
is dominated by the PSD cone order (a dense scaling block of ≈ k⁴/4 doubles per cone of order k,
or one eigendecomposition per cone per iteration) gain a lot; Schur-complement interior-point
methods (an m × m dense Newton system for m multipliers) pay m² and usually lose when the layers
are wide.  Each backend declares which it is (``decomposition_pays``, lipsdp.backends) and
:func:`should_decompose` reads that declaration (measurements: benchmarks/results-chordal.md).
For a wide separator (s = 1 024 gives 524 800 variables per separator) it is never worth it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from .assembly import LMI, LMIProblem, LMITerm
from .reductions import Chordal

__all__ = [
    "DecomposedProblem",
    "decompose",
    "block_graph",
    "chordal_cliques",
    "separators_from_monolithic",
    "should_decompose",
    "separator_variable_count",
    "decompose_if",
]


# ------------------------------------------------------------------------------------------
# sparsity of an LMI on its coordinate blocks
# ------------------------------------------------------------------------------------------
def _offsets(lmi: LMI) -> np.ndarray | None:
    blocks = [int(b) for b in (lmi.blocks or [])]
    if not blocks or sum(blocks) != lmi.size or min(blocks) <= 0:
        return None
    return np.concatenate([[0], np.cumsum(blocks)]).astype(int)


def _term_support(t: LMITerm, off: np.ndarray) -> tuple[int, ...]:
    rows = t.U.tocsc().indices if sp.issparse(t.U) else np.flatnonzero(np.any(np.asarray(t.U) != 0, axis=1))
    if len(rows) == 0:
        return ()
    return tuple(np.unique(np.searchsorted(off, rows, side="right") - 1).tolist())


def _f0_block_pairs(lmi: LMI, off: np.ndarray) -> dict[tuple[int, int], sp.coo_matrix]:
    """Nonzero entries of F0 grouped by (block_row, block_col) with block_row ≤ block_col."""
    F = sp.coo_matrix(lmi.F0)
    keep = F.data != 0
    r, c, v = F.row[keep], F.col[keep], F.data[keep]
    br = np.searchsorted(off, r, side="right") - 1
    bc = np.searchsorted(off, c, side="right") - 1
    out: dict[tuple[int, int], tuple] = {}
    lo, hi = np.minimum(br, bc), np.maximum(br, bc)
    for key in set(zip(lo.tolist(), hi.tolist())):
        m = (lo == key[0]) & (hi == key[1])
        out[key] = (r[m], c[m], v[m])
    return out


def block_graph(lmi: LMI) -> tuple[int, set[tuple[int, int]], list[tuple[int, ...]]]:
    """(number of blocks, edges a < b of the block sparsity graph, block support of each term)."""
    off = _offsets(lmi)
    if off is None:
        raise ValueError("LMI.blocks must be positive block sizes summing to the LMI order")
    p = len(off) - 1
    edges: set[tuple[int, int]] = set()
    supports = []
    for t in lmi.terms:
        s = _term_support(t, off)
        supports.append(s)
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                edges.add((s[i], s[j]))
    for a, b in _f0_block_pairs(lmi, off):
        if a != b:
            edges.add((a, b))
    return p, edges, supports


def chordal_cliques(p: int, edges: set[tuple[int, int]]) -> tuple[list[tuple[int, ...]], list[tuple[int, int]]]:
    """Maximal cliques of a chordal extension of the block graph, and a clique tree.

    A path graph (every edge (k, k+1)) gives cliques (k, k+1) in order and the path tree —
    the feedforward LipSDP case.  Otherwise a minimum-degree elimination on the (small) block
    graph gives a chordal extension; its maximal cliques are joined by a maximum-weight
    spanning tree of the clique intersection graph (weight = shared blocks), which is a clique
    tree (Blair & Peyton, "An introduction to chordal graphs and clique trees", 1993).
    Returns (cliques, tree edges (a, b) with a < b).
    """
    if p <= 1:
        return [tuple(range(p))], []
    if all(b == a + 1 for a, b in edges):
        cliques = [(k, k + 1) for k in range(p - 1)]
        return cliques, [(k, k + 1) for k in range(p - 2)]
    adj = {v: set() for v in range(p)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    remaining = set(range(p))
    cands: list[frozenset] = []
    while remaining:
        v = min(remaining, key=lambda u: (len(adj[u] & remaining), u))
        nb = adj[v] & remaining
        cands.append(frozenset(nb | {v}))
        for a in nb:
            adj[a] |= nb - {a}
        remaining.discard(v)
    maximal = [c for c in cands if not any(c < d for d in cands)]
    uniq: list[frozenset] = []
    for c in maximal:
        if c not in uniq:
            uniq.append(c)
    cliques = [tuple(sorted(c)) for c in uniq]
    cliques.sort()
    m = len(cliques)
    tree: list[tuple[int, int]] = []
    if m > 1:
        from scipy.sparse.csgraph import minimum_spanning_tree

        W = np.zeros((m, m))
        for i in range(m):
            for j in range(i + 1, m):
                w = len(set(cliques[i]) & set(cliques[j]))
                if w:
                    W[i, j] = -float(w)  # maximum-weight = minimum of negatives
        T = minimum_spanning_tree(sp.csr_matrix(W)).tocoo()
        tree = sorted((min(a, b), max(a, b)) for a, b in zip(T.row.tolist(), T.col.tolist()))
    return cliques, tree


# ------------------------------------------------------------------------------------------
@dataclass
class DecomposedProblem(LMIProblem):
    """An :class:`LMIProblem` produced by :func:`decompose` (one LMI per clique).

    θ = [θ_original (``original_n_vars``); separator entries].  ``cliques[j]`` lists the blocks
    of LMI j, ``tree`` the clique-tree edges (a, b), ``separators[e]`` the blocks shared by edge
    e, whose matrix X_e (slice ``sep_slices[e]`` of θ, upper triangle row-major) enters LMI a
    with + and LMI b with −.  ``source`` is the monolithic problem.
    """

    original_n_vars: int = 0
    cliques: list = field(default_factory=list)
    tree: list = field(default_factory=list)
    separators: list = field(default_factory=list)
    sep_slices: list = field(default_factory=list)
    source: LMIProblem | None = None
    lmi_index: list = field(default_factory=list)  # clique LMI j -> index of its source LMI
    decomposed: ClassVar[bool] = True

    def sizes(self) -> dict:
        d = super().sizes()
        d["chordal"] = {
            "cliques": len(self.cliques),
            "separator_vars": int(self.n_vars - self.original_n_vars),
            "original_orders": [int(l.size) for l in self.source.lmis] if self.source else [],
        }
        return d

    def separator_matrices(self, theta: np.ndarray) -> list[np.ndarray]:
        """The symmetric X_e encoded in θ."""
        out = []
        for e, sl in enumerate(self.sep_slices):
            x = np.asarray(theta[sl], dtype=float)
            s = int(round((np.sqrt(8 * len(x) + 1) - 1) / 2))
            X = np.zeros((s, s))
            iu = np.triu_indices(s)
            X[iu] = x
            X = X + np.triu(X, 1).T
            out.append(X)
        return out


def separator_variable_count(problem: LMIProblem) -> int:
    """Σ_e s_e (s_e + 1)/2 free scalars :func:`decompose` would add (0 if nothing to split)."""
    total = 0
    for lmi in problem.lmis:
        off = _offsets(lmi)
        if off is None:
            continue
        p, edges, _ = block_graph(lmi)
        cliques, tree = chordal_cliques(p, edges)
        for a, b in tree:
            s = sum(lmi.blocks[k] for k in set(cliques[a]) & set(cliques[b]))
            total += s * (s + 1) // 2
    return total


def _local_csc(rows_local: np.ndarray, n_cols: int, U: sp.csc_matrix, size: int) -> sp.csc_matrix:
    U = U.tocsc()
    return sp.csc_matrix((U.data.copy(), rows_local[U.indices], U.indptr.copy()), shape=(size, n_cols))


def decompose(problem: LMIProblem) -> LMIProblem:
    """The exactly equivalent problem with one LMI per clique (see the module docstring).

    Returns ``problem`` itself when no LMI splits into two or more cliques (a dense block
    pattern, or a network without hidden layers).  Otherwise a :class:`DecomposedProblem`
    with the same optimal value whose first ``problem.n_vars`` variables are the original θ.
    """
    plans = []
    for lmi in problem.lmis:
        off = _offsets(lmi)
        if off is None:
            plans.append(None)
            continue
        p, edges, supports = block_graph(lmi)
        cliques, tree = chordal_cliques(p, edges)
        plans.append(None if len(cliques) < 2 else (off, cliques, tree, supports))
    if all(pl is None for pl in plans):
        return problem

    n_vars = problem.n_vars
    new_lmis: list[LMI] = []
    lmi_index: list[int] = []
    all_cliques, all_tree, all_seps, sep_slices = [], [], [], []
    layout = dict(problem.layout)
    for li, (lmi, plan) in enumerate(zip(problem.lmis, plans)):
        if plan is None:
            new_lmis.append(lmi)
            lmi_index.append(li)
            all_cliques.append(None)
            continue
        off, cliques, tree, supports = plan
        base = len(new_lmis)
        # local coordinates of every clique
        local_maps, sizes = [], []
        for cq in cliques:
            m = np.full(lmi.size, -1, dtype=np.int64)
            pos = 0
            for b in cq:
                m[off[b]:off[b + 1]] = np.arange(pos, pos + off[b + 1] - off[b])
                pos += off[b + 1] - off[b]
            local_maps.append(m)
            sizes.append(pos)
        cl_sets = [set(c) for c in cliques]

        def home(support) -> int:
            s = set(support)
            for j, c in enumerate(cl_sets):
                if s <= c:
                    return j
            raise AssertionError(f"block support {sorted(s)} lies in no clique")  # chordal extension covers it

        terms = [[] for _ in cliques]
        for t, sup in zip(lmi.terms, supports):
            if not sup:
                continue
            j = home(sup)
            terms[j].append(LMITerm(t.var, _local_csc(local_maps[j], t.U.shape[1], t.U, sizes[j]), np.asarray(t.C)))
        f0 = [([], [], []) for _ in cliques]
        for (a, b), (r, c, v) in _f0_block_pairs(lmi, off).items():
            j = home((a, b))
            f0[j][0].append(local_maps[j][r])
            f0[j][1].append(local_maps[j][c])
            f0[j][2].append(v)
        # separators: X_e on the blocks shared by tree edge e = (a, b): +X in a, −X in b
        for e, (a, b) in enumerate(tree):
            sep_blocks = sorted(cl_sets[a] & cl_sets[b])
            coords = np.concatenate([np.arange(off[k], off[k + 1]) for k in sep_blocks])
            s = len(coords)
            start = n_vars
            for j, sign in ((a, 1.0), (b, -1.0)):
                rloc = local_maps[j][coords]
                var = start
                C_off = np.array([[0.0, sign], [sign, 0.0]])
                C_diag = np.array([[sign]])
                for i in range(s):
                    # diagonal entry x_ii e_i e_i^T
                    terms[j].append(LMITerm(var, sp.csc_matrix((np.ones(1), np.array([rloc[i]]), np.array([0, 1])),
                                                               shape=(sizes[j], 1)), C_diag))
                    var += 1
                    for k2 in range(i + 1, s):
                        ri, rk = rloc[i], rloc[k2]
                        U = sp.csc_matrix((np.ones(2), np.array([ri, rk]), np.array([0, 1, 2])), shape=(sizes[j], 2))
                        terms[j].append(LMITerm(var, U, C_off))
                        var += 1
            n_vars = start + s * (s + 1) // 2
            sep_slices.append(slice(start, n_vars))
            layout[f"chordal.lmi{li}.sep{e}"] = slice(start, n_vars)
            all_seps.append([int(k) for k in sep_blocks])
            all_tree.append((base + a, base + b))
        for j, cq in enumerate(cliques):
            r = np.concatenate(f0[j][0]) if f0[j][0] else np.zeros(0, dtype=int)
            c = np.concatenate(f0[j][1]) if f0[j][1] else np.zeros(0, dtype=int)
            v = np.concatenate(f0[j][2]) if f0[j][2] else np.zeros(0)
            F0 = sp.csr_matrix((v, (r, c)), shape=(sizes[j], sizes[j]))
            new_lmis.append(LMI(sizes[j], F0, terms[j], [int(off[b + 1] - off[b]) for b in cq]))
            lmi_index.append(li)
            all_cliques.append(tuple(int(b) for b in cq))
    extra = n_vars - problem.n_vars
    return DecomposedProblem(
        n_vars=n_vars,
        c=np.concatenate([np.asarray(problem.c, dtype=float), np.zeros(extra)]),
        nonneg=np.concatenate([np.asarray(problem.nonneg, dtype=bool), np.zeros(extra, dtype=bool)]),
        lmis=new_lmis,
        layout=layout,
        original_n_vars=problem.n_vars,
        cliques=all_cliques,
        tree=all_tree,
        separators=all_seps,
        sep_slices=sep_slices,
        source=problem,
        lmi_index=lmi_index,
        rewrites=tuple(problem.rewrites) + (Chordal(problem.n_vars),),
    )


# ------------------------------------------------------------------------------------------
def separators_from_monolithic(dec: DecomposedProblem, theta: np.ndarray) -> np.ndarray:
    """Extend a monolithic θ (F(θ) ≺ 0) to the decomposed variables so every clique LMI holds.

    Path clique trees only (the feedforward case).  With M = F(θ) block-tridiagonal and
    S_0 = M_00, S_{k+1} = M_{k+1,k+1} − M_{k+1,k} S_k^{-1} M_{k,k+1} (all ≺ 0 when M ≺ 0), clique
    (k, k+1) gets [[S_k, M_{k,k+1}], [M_{k+1,k}, M_{k+1,k} S_k^{-1} M_{k,k+1}]] (Schur complement 0,
    so ⪯ 0), the last clique [[S_{l−1}, M], [M^T, M_ll]]; these sum to M, and X_e is read off as
    the clique matrix minus its assigned part.  Returns the full decomposed θ.
    """
    theta = np.asarray(theta, dtype=float)[: dec.original_n_vars]
    full = np.concatenate([theta, np.zeros(dec.n_vars - dec.original_n_vars)])
    src = dec.source
    e_global = 0
    j0 = 0
    for li, lmi in enumerate(src.lmis):
        idx = [j for j, s in enumerate(dec.lmi_index) if s == li]
        if dec.cliques[idx[0]] is None:
            continue
        cl = [dec.cliques[j] for j in idx]
        if any(c != (k, k + 1) for k, c in enumerate(cl)):
            raise NotImplementedError("separators_from_monolithic handles path clique trees only")
        off = _offsets(lmi)
        M = lmi.evaluate(theta)
        B = lambda a, b: M[off[a]:off[a + 1], off[b]:off[b + 1]]  # noqa: E731
        p = len(off) - 1
        S = B(0, 0)
        for k in range(p - 1):
            j = idx[k]
            A_loc = dec.lmis[j].evaluate(full)  # assigned part + separators set so far (X_{k} done)
            if k < p - 2:
                nxt = B(k + 1, k) @ np.linalg.solve(S, B(k, k + 1))
                n_k = off[k + 1] - off[k]
                X = nxt - A_loc[n_k:, n_k:]  # clique k block k+1 target minus current content
                sl = dec.sep_slices[e_global + k]
                iu = np.triu_indices(X.shape[0])
                full[sl] = ((X + X.T) / 2)[iu]
                S = B(k + 1, k + 1) - nxt
        e_global += p - 2
        j0 += len(idx)
    return full


# ------------------------------------------------------------------------------------------
def should_decompose(problem: LMIProblem, backend) -> bool:
    """The ``decompose="auto"`` rule.

    ``backend``: a backend instance, class or registered name.  Decompose only for backends that
    declare ``decomposition_pays`` (cost dominated by the PSD cone order: a dense scaling block of
    ≈ k⁴/4 doubles, or one eigendecomposition per cone per iteration), when the largest clique is
    at most half of the LMI order (≥ 3 layer blocks of similar width) and the separator variables
    stay below 200 000.  Schur-complement interior points and lipsdp's structure-exploiting
    solvers are never decomposed automatically: the m² Newton system grows with the Σ s²/2
    separator variables (measurements: benchmarks/results-chordal.md).
    """
    from .backends import backend_class

    if not backend_class(backend).decomposition_pays:
        return False
    best = False
    for lmi in problem.lmis:
        off = _offsets(lmi)
        if off is None or len(off) < 4:
            continue
        p, edges, _ = block_graph(lmi)
        cliques, _ = chordal_cliques(p, edges)
        if len(cliques) < 2:
            continue
        biggest = max(sum(lmi.blocks[b] for b in c) for c in cliques)
        if biggest <= 0.5 * lmi.size:
            best = True
    return best and separator_variable_count(problem) <= 200_000


def decompose_if(problem: LMIProblem, decompose_opt="auto", backend=None) -> LMIProblem:
    """The API hook: ``decompose_opt`` True → :func:`decompose`; False → unchanged; "auto" →
    :func:`should_decompose` for ``backend`` (instance, class or name; None: never).  Anything
    else raises :class:`~lipsdp.errors.FormulationError`."""
    from .errors import FormulationError

    if decompose_opt is True or (isinstance(decompose_opt, str) and decompose_opt.lower() in ("true", "yes", "on")):
        return decompose(problem)
    if decompose_opt is False or decompose_opt is None or (
            isinstance(decompose_opt, str) and decompose_opt.lower() in ("false", "no", "off")):
        return problem
    if isinstance(decompose_opt, str) and decompose_opt.lower() == "auto":
        return decompose(problem) if backend is not None and should_decompose(problem, backend) else problem
    raise FormulationError(f"decompose: expected 'auto', True or False, got {decompose_opt!r}")
