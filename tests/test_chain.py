"""The linear-in-depth barrier backend (lipsdp.backends.chain) on the known-answer bank.

Golden values: notes/reference-values.md (random_weights LipSDP-Neuron 36.48223, mnist_weights
24.3663) and math.md §4 (2FC-16 P-free NSR 22.0744); elsewhere agreement with the native
interior-point solver.  Every bound must pass the independent check (``verified``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import lipsdp
from lipsdp.assembly import LMI, LMIProblem, LMITerm
from lipsdp.backends import AUTO_RULES, CHAIN_MIN_ORDER, REGISTRY, SolveOptions, choose_auto, get_backend
from lipsdp.backends.chain import ChainBackend, _Chain
from lipsdp.errors import SolverError
from lipsdp.formulations import formulation_for
from lipsdp.io import from_weights, load
from lipsdp.ir import Affine, MaxMin, Network, Residual, SlopeRestricted

from .refdata import REFDATA as REF

RANDOM = REF / "LipSDP" / "random_weights.mat"
MNIST = REF / "LipSDP" / "mnist_weights.mat"
FC16 = REF / "QCs_MaxMin" / "networks_weights" / "weights_l2_2fc_16.mat"

needs_refdata = pytest.mark.skipif(not RANDOM.exists(), reason=f"refdata not found at {REF}")


def mlp(seed, dims):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]


def test_registered_last_and_auto_only_for_deep_chains():
    assert list(REGISTRY)[-1] == "chain"
    assert isinstance(get_backend("chain"), ChainBackend)
    assert all(name != "chain" for _, name in AUTO_RULES)
    # a deep narrow ReLU net (26 blocks, order 4 + 24·64 + 1 = 1541) goes to chain ...
    deep = formulation_for(from_weights(mlp(0, [4] + [64] * 24 + [1]), activation="relu"), "l2", "neuron").problem()
    assert deep.max_order >= CHAIN_MIN_ORDER and choose_auto(deep) == "chain"
    # ... a shallow one of larger order (784-100×5-10: 6 blocks) and a non-tridiagonal one do not
    wide = formulation_for(from_weights(mlp(0, [784] + [100] * 5 + [10]), activation="relu"), "l2", "neuron")
    assert choose_auto(wide.problem()) == "native"
    assert not ChainBackend.applies(_not_tridiagonal())


# --- golden values ------------------------------------------------------------------------------
@needs_refdata
def test_random_weights_neuron():
    cert = lipsdp.certify(RANDOM, solver="chain", lower=False)
    assert cert.verified, cert.message
    assert cert.status == "optimal"
    assert cert.bound >= 36.48223 * (1 - 1e-6)  # the exact constant: never below it
    assert cert.bound == pytest.approx(36.48223, rel=2e-6)


@needs_refdata
def test_mnist_neuron():
    cert = lipsdp.certify(MNIST, solver="chain", lower=False)
    assert cert.verified, cert.message
    assert cert.bound >= 24.29922  # a true difference quotient (reference-values.md)
    assert cert.bound == pytest.approx(24.3663, rel=1e-5)


@needs_refdata
def test_maxmin_2fc16_nsr():
    """GroupSort multipliers (free γ, τ with a recession direction γ = −τ, kept bounded by the box)."""
    cert = lipsdp.certify(FC16, solver="chain", activation="maxmin", lower=False)
    assert cert.verified, cert.message
    assert cert.bound == pytest.approx(22.0744, rel=1e-4)


# --- agreement with the native solver -----------------------------------------------------------
@pytest.mark.parametrize("seed,dims", [(0, [5, 12, 3]), (1, [6, 10, 10, 2]), (2, [4, 12, 10, 12, 1]),
                                       (3, [4, 8, 8, 8, 8, 8, 1])], ids=["d1", "d2", "d3", "d5"])
def test_relu_matches_native(seed, dims):
    Ws = mlp(seed, dims)
    a = lipsdp.certify(Ws, solver="chain", lower=False)
    b = lipsdp.certify(Ws, solver="native", lower=False)
    assert a.verified and b.verified
    assert abs(a.bound - b.bound) <= 1e-4 * b.bound, (a.bound, b.bound)


@pytest.mark.parametrize("act,method", [("relu", "neuron"), ("maxmin", "chain")])
def test_linf_matches_native(act, method):
    """ℓ∞: the τ_i terms couple the input block and the border block through a diagonal C (split
    into rank-1 pieces, so the LMI stays block tridiagonal)."""
    Ws = mlp(7, [12, 8, 8, 3])
    kw = dict(norm="linf", output=1, method=method, activation=act, lower=False)
    a = lipsdp.certify(Ws, solver="chain", **kw)
    b = lipsdp.certify(Ws, solver="native", **kw)
    assert a.verified and b.verified
    assert abs(a.bound - b.bound) <= 1e-4 * b.bound, (a.bound, b.bound)


# --- solver behaviour ---------------------------------------------------------------------------
def test_iteration_budget_gives_checked_point():
    Ws = mlp(3, [4, 8, 8, 8, 1])
    form = formulation_for(from_weights(Ws), "l2", "neuron")
    prob = form.problem()
    res = ChainBackend().solve(prob, SolveOptions(max_iters=3))
    assert res.status == "time_limit"
    th = res.theta
    assert np.all(th[prob.nonneg] >= 0)
    assert np.linalg.eigvalsh(prob.lmis[0].evaluate(th))[-1] < 0  # strictly feasible
    assert form.check(form.recover(prob, th)).verified


@needs_refdata
def test_several_lmis():
    form = formulation_for(load(RANDOM), "l2", "neuron")
    p = form.problem()
    p2 = LMIProblem(p.n_vars, p.c, p.nonneg, [p.lmis[0], p.lmis[0]], p.layout)
    res = ChainBackend().solve(p2, SolveOptions())
    chk = form.check(form.recover(p, res.theta))
    assert chk.verified
    assert form.bound_from_rho(chk.rho) == pytest.approx(36.48223, rel=1e-5)


def _not_tridiagonal():
    n = 3
    U = sp.csc_matrix(np.array([[1.0], [0.0], [1.0]]))  # touches blocks 0 and 2
    lmi = LMI(n, sp.csr_matrix((n, n)), [LMITerm(0, U, np.array([[-1.0]]))], [1, 1, 1])
    return LMIProblem(1, np.array([1.0]), np.array([True]), [lmi], {"rho": slice(0, 1)})


def test_not_block_tridiagonal_is_refused():
    with pytest.raises(SolverError, match="native"):
        ChainBackend().solve(_not_tridiagonal(), SolveOptions())


def test_band_operators_are_exact():
    """Gradient tr(A_v Σ) and Hessian products tr(A_v Σ A(x) Σ) from the selected inversion and its
    derivative agree with dense linear algebra."""
    Ws = mlp(5, [5, 7, 6, 8, 3])
    prob = formulation_for(from_weights(Ws), "l2", "neuron").problem()
    lmi, nv = prob.lmis[0], prob.n_vars
    ch = _Chain(lmi, nv, 0)
    th = ChainBackend()._start(prob, [ch]) * (1 + 0.1 * np.random.default_rng(0).random(nv))
    S = -lmi.evaluate(th)
    Sig = np.linalg.inv(S)
    Sd, So = ch.S_band(th)
    fac = ch.factor(Sd, So)
    assert ch.logdet(fac) == pytest.approx(np.linalg.slogdet(S)[1], rel=1e-12)
    Sdi, Soi, Pinv = ch.selinv(fac, So)
    A = [lmi.evaluate(e) - lmi.F0.toarray() for e in np.eye(nv)]
    g = ch.traces(Sdi, Soi)
    assert np.allclose(g, [np.sum(Ai * Sig) for Ai in A], rtol=1e-10, atol=1e-12)
    x = np.random.default_rng(1).standard_normal(nv)
    Ax = sum(xi * Ai for xi, Ai in zip(x, A))
    dD, dB = ch.assemble(x, scale=-1.0)
    Yd, Yo = ch.dselinv(fac, So, Pinv, Sdi, Soi, dD, dB)
    hv = ch.traces(Yd, Yo)
    assert np.allclose(hv, [np.sum(Ai * (Sig @ Ax @ Sig)) for Ai in A], rtol=1e-9, atol=1e-12)


def test_stopped_run_returns_its_best_iterate():
    """A centring step at fixed μ can raise the objective (on this deep net the iterates rise again
    after Newton step 16): an iteration budget must return the best checked point so far, so a
    larger budget is never worse — and every answer is checked and above the sampled lower bound."""
    from lipsdp.lower import lower_bound

    net = from_weights(mlp(0, [4] + [64] * 24 + [1]), activation="relu")
    form = formulation_for(net, "l2", "neuron")
    prob = form.problem()
    bounds = []
    for k in (16, 22):
        res = ChainBackend().solve(prob, SolveOptions(max_iters=k))
        assert res.status == "time_limit"
        chk = form.check(form.recover(prob, res.theta))
        assert chk.verified
        bounds.append(form.bound_from_rho(chk.rho))
    assert bounds[1] <= bounds[0] * (1 + 1e-9)
    assert float(lower_bound(net)) <= bounds[1]


# --- capabilities as data -----------------------------------------------------------------------
def _band_builds(problem) -> bool:
    """The reference answer (what ``applies`` did before ``accepts``): build the solver's band."""
    try:
        for lmi in problem.lmis:
            _Chain(lmi, problem.n_vars, 0)
    except SolverError:
        return False
    return True


def _residual_problem():
    """A residual net's lifted LMI (math.md §7): the skip connections couple non-adjacent blocks."""
    rng = np.random.default_rng(0)
    net = Network([
        Affine(rng.standard_normal((4, 3))),
        Residual((Affine(0.5 * rng.standard_normal((6, 4))), MaxMin(), Affine(0.5 * rng.standard_normal((4, 6))))),
        Residual((Affine(0.5 * rng.standard_normal((4, 4))), SlopeRestricted("relu"))),
        Affine(rng.standard_normal((2, 4))),
    ])
    return formulation_for(net, "l2", "neuron").problem()


def _three_blocks(F0=None, U=None, C=None):
    n = 3
    F0 = sp.csr_matrix((n, n)) if F0 is None else sp.csr_matrix(F0)
    lmi = LMI(n, F0, [LMITerm(0, sp.csc_matrix(U), np.asarray(C, dtype=float))], [1, 1, 1])
    return LMIProblem(1, np.array([1.0]), np.array([True]), [lmi], {"rho": slice(0, 1)})


def _capability_cases():
    cases = {
        "not_tridiagonal": (_not_tridiagonal(), False),
        "residual": (_residual_problem(), False),
        # F0 entry between blocks 0 and 2
        "F0_off_band": (_three_blocks(F0=np.array([[0, 0, 1.0], [0, 0, 0], [1.0, 0, 0]]),
                                      U=np.eye(3)[:, :1], C=[[-1.0]]), False),
        # diagonal C: columns e_0 and e_2 each lie in one block, so the term is split and accepted ...
        "diag_split": (_three_blocks(U=np.eye(3)[:, [0, 2]], C=np.diag([-1.0, -2.0])), True),
        # ... but not when the two columns are coupled by C, nor when a column itself spans blocks 0 and 2
        "coupled_split": (_three_blocks(U=np.eye(3)[:, [0, 2]], C=[[-1.0, 0.5], [0.5, -1.0]]), False),
        "column_spans": (_three_blocks(U=np.array([[1.0, 0], [0, 1.0], [1.0, 0]]), C=np.diag([-1.0, -1.0])), False),
    }
    for seed, dims in [(0, [5, 12, 3]), (1, [6, 10, 10, 2]), (2, [4, 12, 10, 12, 1]), (3, [4, 8, 8, 8, 8, 8, 1]),
                       (0, [4] + [64] * 24 + [1]), (0, [784] + [100] * 5 + [10])]:
        cases[f"relu{dims}"] = (formulation_for(from_weights(mlp(seed, dims)), "l2", "neuron").problem(), True)
    for act, method in [("relu", "neuron"), ("maxmin", "chain")]:
        net = from_weights(mlp(7, [12, 8, 8, 3]), activation=act)
        cases[f"linf_{act}"] = (formulation_for(net, "linf", method, 1).problem(), True)
    if RANDOM.exists():
        cases["random_weights"] = (formulation_for(load(RANDOM), "l2", "neuron").problem(), True)
        cases["mnist"] = (formulation_for(load(MNIST), "l2", "neuron").problem(), True)
        cases["fc16_maxmin"] = (formulation_for(load(FC16, activation="maxmin"), "l2", "neuron").problem(), True)
    return cases


def test_accepts_agrees_with_building_the_band():
    """``accepts`` reads the declared structure only; on every problem of this file, a residual net
    and hand-made edge cases it answers what building the solver's band answers (and what was
    expected: feedforward LMIs yes, residual / off-band no)."""
    for name, (prob, expected) in _capability_cases().items():
        got = ChainBackend.accepts(prob)
        assert got == _band_builds(prob) == expected, name
        assert ChainBackend.applies(prob) == got, name  # the old name, kept as an alias


def test_capabilities_are_data():
    assert ChainBackend.anytime is True
    assert ChainBackend.exploits == ("block-tridiagonal", "low-rank terms")


def test_memory_model():
    """memory_doubles is the chain formula of the memory guard (lipsdp/memory.py's table, moved
    here): 30·Σ_k b_k² + 10·R·b_max doubles, R the number of term columns — linear in depth."""
    for dims in ([5, 12, 3], [4] + [64] * 24 + [1], [784] + [100] * 5 + [10]):
        prob = formulation_for(from_weights(mlp(0, dims)), "l2", "neuron").problem()
        b = prob.lmis[0].blocks
        R = sum(t.U.shape[1] for t in prob.lmis[0].terms)
        assert ChainBackend.memory_doubles(prob) == {"chain": 30.0 * sum(k * k for k in b) + 10.0 * R * max(b)}
    deep = [formulation_for(from_weights(mlp(0, [8] + [16] * k + [1])), "l2", "neuron").problem() for k in (10, 20)]
    m10, m20 = (ChainBackend.memory_doubles(p)["chain"] for p in deep)
    assert 1.8 < m20 / m10 < 2.2  # linear in depth
