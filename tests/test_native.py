"""The native interior-point backend (lipsdp.backends.native) on the known-answer bank.

Golden values: notes/reference-values.md (LipSDP README values re-solved; QCs_MaxMin rows) and
math.md §4 (P-free NSR 22.0744 and the chain 22.5944 on 2FC-16).  Every bound must pass the
independent check (api.certify reports ``verified``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import lipsdp
from lipsdp.assembly import LMIProblem
from lipsdp.backends import REGISTRY, SolveOptions, get_backend, installed_backends
from lipsdp.backends.native import NativeBackend
from lipsdp.formulations import formulation_for
from lipsdp.io import load

from .refdata import REFDATA as REF  # shared lookup: $LIPSDP_REFDATA, ../shared, /work/shared
RANDOM = REF / "LipSDP" / "random_weights.mat"
MNIST = REF / "LipSDP" / "mnist_weights.mat"
FC16 = REF / "QCs_MaxMin" / "networks_weights" / "weights_l2_2fc_16.mat"

pytestmark = pytest.mark.skipif(not RANDOM.exists(), reason=f"refdata not found at {REF}")

# (file, activation, method, golden, source)
BANK = [
    (RANDOM, "relu", "neuron", 36.48223, "reference-values.md: random_weights LipSDP-Neuron re-solved"),
    (RANDOM, "relu", "layer", 39.83862, "reference-values.md: random_weights LipSDP-Layer re-solved"),
    (MNIST, "relu", "neuron", 24.3663, "reference-values.md: mnist_weights LipSDP-Neuron re-solved"),
    (FC16, "maxmin", "neuron", 22.0744, "math.md §4 / reference-values.md: 2FC-16 P-free NSR"),
    (FC16, "maxmin", "chain", 22.5944, "math.md §4: 2FC-16 NSR chain (S = P = 0)"),
]


def test_registered_first():
    assert next(iter(REGISTRY)) == "native"
    assert "native" in installed_backends()
    assert isinstance(get_backend("native"), NativeBackend)


@pytest.mark.parametrize("path,act,method,golden,source", BANK, ids=lambda v: getattr(v, "stem", str(v)))
def test_known_answers(path, act, method, golden, source):
    cert = lipsdp.certify(path, method=method, solver="native", activation=act, lower=False)
    assert cert.verified, cert.message
    assert cert.optimal and cert.status == "optimal"
    # golden values carry 5-7 significant digits: 1e-5 relative can fail
    assert abs(cert.bound - golden) <= 1e-5 * golden, (cert.bound, golden, source)


# (CVXOPT fails on the P-free NSR problem of 2FC-16 here, so that one is compared with its golden
#  value above only.)
@pytest.mark.parametrize("path,act,method", [(RANDOM, "relu", "neuron"), (RANDOM, "relu", "layer"),
                                             (MNIST, "relu", "neuron")], ids=["random", "random-layer", "mnist"])
def test_matches_cvxopt(path, act, method):
    if "cvxopt" not in installed_backends():
        pytest.skip("cvxopt is not installed")
    a = lipsdp.certify(path, method=method, solver="native", activation=act, lower=False)
    b = lipsdp.certify(path, method=method, solver="cvxopt", activation=act, lower=False)
    assert a.verified and b.verified
    assert abs(a.bound - b.bound) <= 1e-5 * b.bound, (a.bound, b.bound)


def test_iteration_budget_gives_checked_suboptimal_bound():
    net = load(RANDOM)
    form = formulation_for(net, "l2", "neuron")
    prob = form.problem()
    res = NativeBackend().solve(prob, SolveOptions(max_iters=3))
    assert res.status == "time_limit"
    chk = form.check(form.recover(prob, res.theta))
    assert chk.verified
    bound = form.bound_from_rho(chk.rho)
    assert bound >= 36.48223 * (1 - 1e-6)  # never below the optimum (reference-values.md)
    assert bound > 36.4823  # three steps are far from optimal: the budget really cut it short


def test_time_limit_through_certify():
    cert = lipsdp.certify(MNIST, solver="native", time_limit=0.0, lower=False)
    assert cert.status == "time_limit" and not cert.optimal
    assert cert.verified
    assert cert.bound >= 24.29922  # a true difference quotient (reference-values.md)


def test_several_lmis():
    """The same LMI listed twice is the same problem: lists of LMIs are handled generically."""
    net = load(RANDOM)
    form = formulation_for(net, "l2", "neuron")
    p = form.problem()
    p2 = LMIProblem(p.n_vars, p.c, p.nonneg, [p.lmis[0], p.lmis[0]], p.layout)
    res = NativeBackend().solve(p2, SolveOptions())
    assert res.status == "optimal"
    chk = form.check(form.recover(p, res.theta))
    assert chk.verified
    assert abs(form.bound_from_rho(chk.rho) - 36.48223) <= 1e-5 * 36.48223


def test_tolerance_is_relative_to_the_objective():
    """tol is a *relative* gap: scaling the objective by 1e-9 must not loosen the bound.  (The gap
    was once divided by max(1, |objective|): this test then gave 49.51; deep contracting nets have
    normalised objectives of 1e-7 and stopped ≈ 10 % above the optimum — ECLipsE grid depth 20:
    0.0065 vs 0.005862.)"""
    net = load(RANDOM)
    form = formulation_for(net, "l2", "neuron")
    p = form.problem()
    scaled = LMIProblem(p.n_vars, 1e-9 * p.c, p.nonneg, p.lmis, p.layout, p.start)
    res = NativeBackend().solve(scaled, SolveOptions())
    assert res.status == "optimal"
    chk = form.check(form.recover(p, res.theta))
    assert chk.verified
    assert abs(form.bound_from_rho(chk.rho) - 36.48223) <= 1e-6 * 36.48223  # reference-values.md


def test_iterates_strictly_feasible():
    net = load(RANDOM)
    form = formulation_for(net, "l2", "neuron")
    prob = form.problem()
    for k in (1, 2, 5):
        th = NativeBackend().solve(prob, SolveOptions(max_iters=k)).theta
        assert np.all(th[prob.nonneg] >= 0)
        assert np.linalg.eigvalsh(prob.lmis[0].evaluate(th))[-1] < 0


@pytest.mark.parametrize("act", ["relu", "maxmin"])
def test_linf_matches_cvxopt(act):
    """ℓ∞ (bordered LMI, diagonal input multipliers — sparse factors in the native solver):
    same optimum as CVXOPT on a small network, both checked."""
    if "cvxopt" not in installed_backends():
        pytest.skip("cvxopt is not installed")
    rng = np.random.default_rng(7)
    dims = [12, 8, 8, 3]
    Ws = [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
    a = lipsdp.certify(Ws, norm="linf", output=1, method="chain" if act == "maxmin" else "neuron",
                       solver="native", activation=act, lower=False)
    b = lipsdp.certify(Ws, norm="linf", output=1, method="chain" if act == "maxmin" else "neuron",
                       solver="cvxopt", activation=act, lower=False)
    assert a.verified and b.verified
    assert abs(a.bound - b.bound) <= 1e-4 * b.bound, (a.bound, b.bound)


def test_linf_table1_2fc16_between_lower_and_naive():
    """ℓ∞ of logit 8 on the 784-input 2FC-16 MaxMin net (LipSDP-NSR Table 1 network): an
    order-801 LMI with 784 input multipliers; cvxpy solvers need minutes (SDPA: 555 s for the
    looser chain, 202.82).  The native bound must be checked, below the chain's 202.82 and the
    naive 543.6, and above the sampled lower bound 152.43 (benchmarks/results-table1.md)."""
    cert = lipsdp.certify(FC16, norm="linf", output=8, solver="native", activation="maxmin", lower=False)
    assert cert.verified, cert.message
    assert 152.43 <= cert.bound <= 202.82
    assert cert.bound < cert.naive_bound


def test_eclipse_fast_warm_start_is_feasible_and_matches_eclipse_fast():
    """FeedforwardL2.start: ECLipsE-Fast's layer-wise multipliers (scaled by START_SCALE), a strictly
    feasible point; unscaled, its certified bound is ECLipsE-Fast's (eclipse-nn, when installed)."""
    from lipsdp.formulations.feedforward import START_SCALE, FeedforwardL2

    rng = np.random.default_rng(7)
    dims = [12, 10, 10, 10, 3]
    Ws = [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
    net = lipsdp.from_weights(Ws, activation="relu")
    form = FeedforwardL2(net, "neuron")
    prob = form.problem()
    assert prob.start is not None
    chk = form.check(form.recover(prob, prob.start * (1 + 1e-6) / START_SCALE))
    assert chk.verified
    opt = lipsdp.certify(net, solver="native", lower=False).bound
    assert opt <= np.sqrt(chk.rho) * (1 + 1e-9)
    try:
        import torch
        from eclipse_nn.LipConstEstimator import LipConstEstimator
    except ImportError:
        return
    fast = float(LipConstEstimator(weights=[torch.tensor(W) for W in Ws]).estimate("ECLipsE_Fast"))
    assert np.sqrt(chk.rho) == pytest.approx(fast, rel=1e-5)


def test_rank_one_form_reproduces_operators():
    """_PreparedLMI splits every term along the eigenvectors of its C and merges identical
    columns; its operators must equal the brute-force definitions: F(θ), the Schur complement
    tr(A_v X A_w S^{-1}) and the traces tr(A_v Y), for terms with non-diagonal, diagonal,
    rank-deficient and shared-column C's and two terms on one variable."""
    from lipsdp.assembly import LMI, LMIProblem, LMITerm
    from lipsdp.backends.native import _PreparedLMI

    rng = np.random.default_rng(3)
    n, nv = 9, 5
    e = np.eye(n)
    border = e[:, [8]]
    terms = [
        LMITerm(0, sp.csc_matrix(rng.standard_normal((n, 2))), np.array([[1.0, 2.0], [2.0, -3.0]])),
        LMITerm(1, sp.csc_matrix(np.hstack([e[:, [0]], border])), np.diag([-1.0, 1.0])),  # ℓ∞-type τ
        LMITerm(2, sp.csc_matrix(np.hstack([e[:, [1]], border])), np.diag([-1.0, 1.0])),  # shares e_8
        LMITerm(3, sp.csc_matrix(rng.standard_normal((n, 2))), np.ones((2, 2))),  # rank-deficient C
        LMITerm(3, sp.csc_matrix(e[:, 2:5]), -np.eye(3)),  # a second term of variable 3
        LMITerm(4, sp.csc_matrix(np.vstack([rng.standard_normal((4, 2)), np.zeros((5, 2))])),
                np.array([[0.0, 1.0], [1.0, -2.0]])),
    ]
    F0 = sp.csr_matrix(np.diag(rng.uniform(-1, 0, n)))
    lmi = LMI(n, F0, terms, [4, 4, 1])
    P = _PreparedLMI(lmi, nv)
    A = [sum(t.U.toarray() @ t.C @ t.U.toarray().T for t in terms if t.var == v) for v in range(nv)]
    th = rng.standard_normal(nv)
    np.testing.assert_allclose(P.evaluate(th), F0.toarray() + sum(th[v] * A[v] for v in range(nv)), atol=1e-12)
    B = rng.standard_normal((n, n))
    X = B @ B.T + n * np.eye(n)
    B = rng.standard_normal((n, n))
    S = B @ B.T + n * np.eye(n)
    Si = np.linalg.inv(S)
    M_ref = np.array([[np.trace(A[v] @ X @ A[w] @ Si) for w in range(nv)] for v in range(nv)])
    np.testing.assert_allclose(P.schur(P.UtYU(X), P.UtYU(Si)), M_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(P.traces(P.UtYU(X)), [np.trace(A[v] @ X) for v in range(nv)], rtol=1e-10)
    Y = rng.standard_normal((n, n))  # nonsymmetric
    np.testing.assert_allclose(P.traces_of(Y), [np.trace(A[v] @ Y) for v in range(nv)], rtol=1e-10, atol=1e-12)
    assert P.R == sum(t.U.shape[1] for t in terms) - 2  # e_8 merged; the rank-deficient C's zero column dropped


def test_sparse_directions_on_a_conv_lmi_match_the_dense_algebra(monkeypatch):
    """On a wide LMI the HKM directions dS are kept as sparse matrices (the exact pattern of the
    terms, no eigen-split fill): the same optimum as the dense algebra, to the solver tolerance."""
    from lipsdp.backends import native
    from tests.test_channel import _cnn

    problem = formulation_for(_cnn(), "l2").problem()
    dense = NativeBackend().solve(problem, SolveOptions(tol=1e-8))
    monkeypatch.setattr(native._PreparedLMI, "SPARSE_MIN_ORDER", 0)
    prepared = native._PreparedLMI(problem.lmis[0], problem.n_vars)
    assert prepared.sparse
    F = prepared.apply(problem.start)
    assert np.abs(prepared.terms.apply(problem.start).toarray() - F).max() <= 1e-12 * np.abs(F).max()
    sparse = NativeBackend().solve(problem, SolveOptions(tol=1e-8))
    assert dense.status == sparse.status == "optimal"
    assert sparse.objective == pytest.approx(dense.objective, rel=1e-6)


def test_blocked_sparse_product_equals_scipy():
    from lipsdp.backends.native import _spmm

    rng = np.random.default_rng(0)
    A = sp.random(2000, 1500, density=0.01, format="csr", random_state=1)
    B = rng.standard_normal((1500, 700))
    assert A.nnz * B.shape[1] >= 1e7  # the blocked, threaded branch
    np.testing.assert_allclose(_spmm(A, B), A @ B, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(_spmm(A, B[:, ::2].T.T), A @ B[:, ::2], rtol=1e-13, atol=1e-12)
