"""Chordal decomposition (lipsdp.chordal, math.md §3): exact, same optimum, verified certificates."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import lipsdp
from lipsdp.assembly import LMI, LMIProblem, LMITerm
from lipsdp.backends import SolveOptions, get_backend, installed_backends
from lipsdp.chordal import (DecomposedProblem, chordal_cliques, decompose, decompose_if, separators_from_monolithic,
                            should_decompose)
from lipsdp.errors import FormulationError
from lipsdp.formulations import formulation_for
from lipsdp.io import from_weights, load

from .refdata import LIPSDP, require

RANDOM_WEIGHTS = LIPSDP / "random_weights.mat"


def _random_net(dims, seed=0):
    rng = np.random.default_rng(seed)
    return from_weights([rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])])


def _assemble(dec: DecomposedProblem, theta, li=0):
    """Σ_j E_j^T F_j(θ, X) E_j over the cliques of source LMI ``li``."""
    lmi = dec.source.lmis[li]
    off = np.concatenate([[0], np.cumsum(lmi.blocks)])
    S = np.zeros((lmi.size, lmi.size))
    for j, l in enumerate(dec.lmis):
        if dec.lmi_index[j] != li:
            continue
        idx = np.concatenate([np.arange(off[b], off[b + 1]) for b in dec.cliques[j]])
        S[np.ix_(idx, idx)] += l.evaluate(theta)
    return S


@pytest.fixture(scope="module")
def rw_form():
    return formulation_for(load(require(RANDOM_WEIGHTS)), "l2", "neuron")


@pytest.fixture(scope="module")
def net5_form():
    return formulation_for(_random_net([3, 8, 8, 8, 8, 2], seed=5), "l2", "neuron")


@pytest.mark.parametrize("which", ["rw_form", "net5_form"])
def test_cliques_sum_to_monolithic_for_any_theta(which, request):
    form = request.getfixturevalue(which)
    P = form.problem()
    D = decompose(P)
    assert isinstance(D, DecomposedProblem)
    nb = len(P.lmis[0].blocks)
    assert D.cliques == [(k, k + 1) for k in range(nb - 1)]  # the layer path (math.md §3)
    assert D.separators == [[k] for k in range(1, nb - 1)]
    assert D.original_n_vars == P.n_vars and np.array_equal(D.c[: P.n_vars], P.c)
    assert not D.nonneg[P.n_vars:].any() and np.array_equal(D.nonneg[: P.n_vars], P.nonneg)
    rng = np.random.default_rng(1)
    for _ in range(3):  # the separators cancel whatever their values
        th = rng.standard_normal(D.n_vars)
        F = P.lmis[0].evaluate(th[: P.n_vars])
        assert np.abs(_assemble(D, th) - F).max() <= 1e-12 * max(1.0, np.abs(F).max())
    # clique orders n_k + n_{k+1}; separator variables s(s+1)/2 each
    assert [l.size for l in D.lmis] == [a + b for a, b in zip(P.lmis[0].blocks[:-1], P.lmis[0].blocks[1:])]
    s = P.lmis[0].blocks[1:-1]
    assert D.n_vars - P.n_vars == sum(k * (k + 1) // 2 for k in s)


def test_separators_from_monolithic_point_make_every_clique_feasible(net5_form):
    """The converse direction of exactness: a monolithic feasible θ extends to the cliques."""
    P = net5_form.problem()
    D = decompose(P)
    res = get_backend("cvxopt").solve(P, SolveOptions(tol=1e-9))
    th = res.theta.copy()
    th[0] *= 1.001  # strictly feasible: only the input block −ρI changes
    assert np.linalg.eigvalsh(P.lmis[0].evaluate(th)).max() < 0
    full = separators_from_monolithic(D, th)
    assert np.array_equal(full[: P.n_vars], th)
    for l in D.lmis:
        F = l.evaluate(full)
        assert np.linalg.eigvalsh(F).max() <= 1e-9 * max(1.0, np.abs(F).max())
    Xs = D.separator_matrices(full)
    assert all(np.allclose(X, X.T) for X in Xs)
    assert np.abs(_assemble(D, full) - P.lmis[0].evaluate(th)).max() < 1e-10


def test_same_optimum_random_weights(rw_form):
    """reference-values.md: LipSDP-Neuron on random_weights.mat = 36.48223 (re-solved)."""
    P = rw_form.problem()
    D = decompose(P)
    res = get_backend("scs").solve(D, SolveOptions(tol=1e-8))
    assert res.status == "optimal"
    rec = rw_form.recover(D, res.theta)
    chk = rw_form.check(rec)  # always on the monolithic LMI
    assert chk.verified
    bound = rw_form.bound_from_rho(chk.rho)
    assert bound == pytest.approx(36.48223, rel=2e-6)
    assert bound >= 36.48222  # the exact constant (reference-values.md): never below


def test_same_optimum_random_5_layer(net5_form):
    """Decomposed (SCS) and monolithic (CVXOPT) checked bounds agree to solver accuracy."""
    P = net5_form.problem()
    mono = get_backend("cvxopt").solve(P, SolveOptions(tol=1e-9))
    b_mono = net5_form.bound_from_rho(net5_form.check(net5_form.recover(P, mono.theta)).rho)
    D = decompose(P)
    dec = get_backend("scs").solve(D, SolveOptions(tol=1e-9))
    chk = net5_form.check(net5_form.recover(D, dec.theta))
    assert chk.verified
    b_dec = net5_form.bound_from_rho(chk.rho)
    assert b_dec == pytest.approx(b_mono, rel=1e-5)
    # the decomposed solver value itself (before the check) is the same optimum
    assert dec.objective == pytest.approx(mono.objective, rel=1e-5)


def test_certify_decompose_option():
    cert = lipsdp.certify(require(RANDOM_WEIGHTS), decompose=True, solver="scs", lower=False)
    assert cert.verified and cert.bound == pytest.approx(36.48223, rel=2e-6)
    assert cert.sizes["chordal"]["cliques"] == 3 and cert.sizes["lmi_orders"] == [12, 40, 50]
    with pytest.raises(FormulationError, match="decompose"):
        lipsdp.certify(RANDOM_WEIGHTS, decompose="sometimes", lower=False)


def test_no_split_returns_the_problem_itself():
    P = formulation_for(_random_net([4, 6, 3]), "l2", "neuron").problem()  # blocks (x0, x1): one clique
    assert decompose(P) is P
    assert decompose_if(P, False) is P


def test_auto_rule():
    P = formulation_for(_random_net([4, 10, 10, 10, 10, 10, 1]), "l2", "neuron").problem()
    assert should_decompose(P, "scs") and should_decompose(P, "clarabel")
    assert not should_decompose(P, "cvxopt")  # Schur-complement IPM: separators cost m²
    assert decompose_if(P, "auto", "cvxopt") is P
    assert isinstance(decompose_if(P, "auto", "scs"), DecomposedProblem)


def _running_intersection(cliques, tree) -> bool:
    adj = {i: set() for i in range(len(cliques))}
    for a, b in tree:
        adj[a].add(b)
        adj[b].add(a)
    for v in set().union(*map(set, cliques)):
        nodes = {i for i, c in enumerate(cliques) if v in c}
        start = next(iter(nodes))
        seen, stack = {start}, [start]
        while stack:
            i = stack.pop()
            for j in adj[i] & nodes:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        if seen != nodes:
            return False
    return True


def test_generic_pattern_cycle_is_exact():
    """A non-path block pattern (a 5-cycle): chordal extension, clique tree, same optimum."""
    rng = np.random.default_rng(3)
    blocks = [2, 3, 2, 3, 2]
    off = np.concatenate([[0], np.cumsum(blocks)])
    n = int(off[-1])
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]
    # −t I written block by block (one variable, several terms), so it couples no blocks
    terms = [LMITerm(0, sp.csc_matrix(np.eye(n)[:, off[b]:off[b + 1]]), -np.eye(blocks[b])) for b in range(5)]
    var = 1
    F0 = np.zeros((n, n))
    for a, b in pairs:
        idx = np.r_[off[a]:off[a + 1], off[b]:off[b + 1]]
        G = rng.standard_normal((len(idx), len(idx)))
        F0[np.ix_(idx, idx)] += G + G.T
        for _ in range(2):
            U = np.zeros((n, 1))
            U[idx, 0] = rng.standard_normal(len(idx))
            terms.append(LMITerm(var, sp.csc_matrix(U), -np.eye(1)))
            var += 1
    c = np.concatenate([[1.0], 0.3 * np.ones(var - 1)])
    nonneg = np.ones(var, dtype=bool)
    P = LMIProblem(var, c, nonneg, [LMI(n, sp.csr_matrix(F0), terms, blocks)], {"t": slice(0, 1)})
    D = decompose(P)
    cl, tree = D.cliques, [(a, b) for a, b in D.tree]
    assert len(cl) >= 2 and max(len(c) for c in cl) == 3  # a 5-cycle's triangulation: triangles
    assert _running_intersection(cl, tree)
    cover = {frozenset(p) for p in pairs}
    assert all(any(p <= set(c) for c in cl) for p in cover)
    th = rng.standard_normal(D.n_vars)
    assert np.abs(_assemble(D, th) - P.lmis[0].evaluate(th[:var])).max() < 1e-11
    solver = "clarabel" if "clarabel" in installed_backends() else "scs"
    r0 = get_backend(solver).solve(P, SolveOptions(tol=1e-9))
    r1 = get_backend(solver).solve(D, SolveOptions(tol=1e-9))
    assert r1.objective == pytest.approx(r0.objective, rel=1e-6, abs=1e-7)
    assert np.linalg.eigvalsh(P.lmis[0].evaluate(r1.theta[:var])).max() <= 1e-6


def test_chordal_cliques_path_and_single_block():
    assert chordal_cliques(1, set()) == ([(0,)], [])
    assert chordal_cliques(4, {(0, 1), (1, 2), (2, 3)}) == ([(0, 1), (1, 2), (2, 3)], [(0, 1), (1, 2)])
