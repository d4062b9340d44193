"""Memory guard (lipsdp.memory): documented growth of the estimates, refusal before solving."""

from __future__ import annotations

import numpy as np
import pytest

import lipsdp
from lipsdp.chordal import decompose
from lipsdp.errors import LipSDPError, MemoryLimitError
from lipsdp.formulations import formulation_for
from lipsdp.io import from_weights
from lipsdp.memory import (available_memory, default_memory_limit, estimate_memory, guard, memory_breakdown,
                           parse_bytes)


def _net(dims, seed=0):
    rng = np.random.default_rng(seed)
    return from_weights([rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])])


def _problem(width, depth, n0=4, method="neuron"):
    return formulation_for(_net([n0] + [width] * depth + [1]), "l2", method).problem()


def test_clarabel_grows_as_k4():
    """Clarabel: (k(k+1)/2)² doubles per PSD cone of order k (anchors.md, solver facts)."""
    a = memory_breakdown(_problem(20, 3), "clarabel")["clarabel"]
    b = memory_breakdown(_problem(40, 3), "clarabel")["clarabel"]
    k1, k2 = 4 + 60, 4 + 120
    assert b / a == pytest.approx((k2 * (k2 + 1)) ** 2 / (k1 * (k1 + 1)) ** 2, rel=1e-12)


def test_schur_ipm_is_m2_plus_m_n2():
    P = _problem(30, 2)
    m, n = P.n_vars, P.lmis[0].size
    for name in ("cvxopt", "sdpa", "mosek"):
        assert memory_breakdown(P, name)[name] == pytest.approx(8.0 * (m * m + m * n * n))


def test_native_and_check_terms():
    P = _problem(30, 2)
    R = sum(t.U.shape[1] for t in P.lmis[0].terms)
    n = P.lmis[0].size
    d = memory_breakdown(P, "native", check_order=n)
    assert set(d) == {"native", "check"}  # no cvxpy canonicalisation for the native solver
    assert d["native"] == pytest.approx(8.0 * (4 * R * R + 3 * n * n))
    assert d["check"] == pytest.approx(8.0 * 7 * n * n)


def test_estimates_grow_with_depth_and_width():
    for name in ("clarabel", "cvxopt", "scs", "native"):
        e = [estimate_memory(_problem(w, d), name) for w, d in ((10, 2), (10, 4), (20, 4), (40, 4))]
        assert all(x < y for x, y in zip(e, e[1:])), (name, e)


def test_chordal_shrinks_the_cone_solvers_estimate():
    P = _problem(20, 8)
    D = decompose(P)
    assert estimate_memory(D, "clarabel") < estimate_memory(P, "clarabel") / 20
    assert estimate_memory(D, "cvxopt") > estimate_memory(P, "cvxopt")  # separators: m grows as Σ s²/2


def test_guard_refuses_tiny_limit_before_solving(monkeypatch):
    from lipsdp.backends import cvxpy_backends

    def boom(*a, **k):  # pragma: no cover - must not run
        raise AssertionError("the solver ran despite the memory guard")

    monkeypatch.setattr(cvxpy_backends.CvxpyBackend, "solve", boom)
    net = _net([4, 20, 20, 20, 1])
    with pytest.raises(MemoryLimitError) as info:
        lipsdp.certify(net, solver="cvxopt", memory_limit=1000, lower=False)
    msg = str(info.value)
    assert isinstance(info.value, LipSDPError) and isinstance(info.value, MemoryError)
    for needle in ("nothing was solved", "decompose=True", "method='layer'", "output=", "memory_limit"):
        assert needle in msg, needle


def test_guard_passes_reasonable_limit():
    P = _problem(10, 2)
    est = guard(P, "cvxopt", "1GB")
    assert 0 < est < 2 ** 30
    assert guard(P, "cvxopt", float("inf")) == est


def test_parse_bytes():
    assert parse_bytes("8GB") == 8 * 2 ** 30
    assert parse_bytes("512 MiB") == 512 * 2 ** 20
    assert parse_bytes(1e9) == 1e9
    for bad in ("lots", -5, 0, "8 parsecs"):
        with pytest.raises(MemoryLimitError, match="memory_limit"):
            parse_bytes(bad)


def test_available_memory_and_default_limit():
    a = available_memory()
    if a is None:
        pytest.skip("this platform does not report available memory")
    assert a > 0
    assert default_memory_limit() <= a


def test_chain_estimate_is_linear_in_depth():
    """The block-tridiagonal solver stores bands only: doubling the depth about doubles its
    estimate (the dense solvers' grow quadratically or worse), and depth 100 × 80 fits easily."""
    import lipsdp.memory as mem
    from lipsdp.formulations import formulation_for

    def est(depth):
        rng = np.random.default_rng(0)
        dims = [4] + [80] * depth + [1]
        Ws = [rng.standard_normal((b, a)) for a, b in zip(dims[:-1], dims[1:])]
        net = lipsdp.from_weights(Ws)
        prob = formulation_for(net, "l2", "neuron", None).problem()
        return mem.memory_breakdown(prob, "chain", check_order=0)["chain"]

    e10, e20 = est(10), est(20)
    assert 1.7 <= e20 / e10 <= 2.3
    assert est(100) < 2e9  # bytes


def test_check_of_a_sparse_conv_lmi_is_estimated_by_its_nonzeros():
    """A wide conv LMI is checked by the sparse proof (memory ∝ fill), not a dense factorisation."""
    from lipsdp import Affine, Network, SlopeRestricted
    from lipsdp.formulations import formulation_for
    from lipsdp.linop import Conv
    from lipsdp.memory import memory_breakdown

    rng = np.random.default_rng(0)
    c1 = Conv(rng.standard_normal((4, 1, 3, 3)) / 3.0, (1, 24, 24), padding=1)
    c2 = Conv(rng.standard_normal((1, 4, 3, 3)) / 6.0, (4, 24, 24), stride=2, padding=1)
    net = Network([Affine(c1), SlopeRestricted("relu"), Affine(c2), SlopeRestricted("relu"),
                   Affine(rng.standard_normal((10, 144)) / 12)])
    problem = formulation_for(net, "l2").problem()
    n = problem.max_order
    check = memory_breakdown(problem, "native")["check"] / 8
    nnz = sum(t.U.nnz for t in problem.lmis[0].terms) + problem.lmis[0].F0.nnz
    assert n > 2000 and check <= 18.0 * nnz + 10.0 * n < 0.1 * 7.0 * n * n
