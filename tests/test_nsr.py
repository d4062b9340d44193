"""LipSDP-NSR on MaxMin / GroupSort / Householder networks, and the LipSDP-RR baseline.

Golden values: shared/notes/reference-values.md (QCs_MaxMin table; "P-free SDP" paragraph;
"single-MaxMin example").  Solvers are named explicitly: CVXOPT fails on the P-free NSR
problems (measured), SDPA / Clarabel solve them.
"""

import math
import warnings

import numpy as np
import pytest

import lipsdp
from lipsdp.api import CertificationWarning
from lipsdp.formulations.rr import ResidualReLU, maxmin_as_relu
from lipsdp.ir import Affine, GroupSort, Householder, MaxMin, Network
from lipsdp.lower import lower_bound

from .refdata import MAXMIN, require


def _net(Ws, act):
    layers = [Affine(Ws[0])]
    for W in Ws[1:]:
        layers += [act, Affine(W)]
    return Network(layers)


def _cert(net, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CertificationWarning)
        return lipsdp.certify(net, lower=False, **kw)


def test_single_maxmin_is_one():
    net = Network([Affine(np.eye(2)), MaxMin(), Affine(np.eye(2))])
    c = _cert(net, method="neuron", solver="sdpa")
    assert c.verified
    assert 1.0 <= c.bound <= 1.0 + 1e-6  # true constant is exactly 1


def test_single_maxmin_residual_relu_is_sqrt2():
    net = Network([Affine(np.eye(2)), MaxMin(), Affine(np.eye(2))])
    c = _cert(net, method="residual-relu", solver="cvxopt")
    assert c.verified
    assert c.bound == pytest.approx(math.sqrt(2), rel=1e-5)  # reference-values.md: ρ = 2.0000


def test_residual_relu_rewriting_is_exact():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((50, 8))
    Wb, H, G = maxmin_as_relu(8)
    np.testing.assert_allclose(Z @ H.T + np.maximum(Z @ Wb.T, 0) @ G.T, MaxMin(size=8).forward(Z), atol=1e-14)


def test_orthogonal_maxmin_net_is_at_most_one():
    rng = np.random.default_rng(1)
    Ws = [np.linalg.qr(rng.standard_normal((6, 6)))[0] for _ in range(3)]
    c = _cert(_net(Ws, MaxMin()), method="neuron", solver="sdpa")
    assert c.verified and c.bound <= 1.0 + 1e-5


@pytest.mark.parametrize("act", [MaxMin(), GroupSort(3), Householder(np.array([[0.6, 0.8]]))])
def test_nsr_between_lower_bound_and_product_of_norms(act):
    rng = np.random.default_rng(2)
    Ws = [rng.standard_normal((6, 4)), rng.standard_normal((6, 6)), rng.standard_normal((2, 6))]
    net = _net(Ws, act)
    c = _cert(net, method="neuron", solver="clarabel")
    lb = float(lower_bound(net))
    assert c.verified
    assert lb <= c.bound <= c.naive_bound * (1 + 1e-9)


def test_householder_reflecting_pairs_equals_maxmin():
    rng = np.random.default_rng(3)
    Ws = [rng.standard_normal((6, 4)), rng.standard_normal((6, 6)), rng.standard_normal((3, 6))]
    hh = Householder(np.array([[1.0, -1.0]]) / math.sqrt(2))
    Z = rng.standard_normal((20, 6))
    np.testing.assert_allclose(hh.with_size(6).forward(Z), MaxMin(size=6).forward(Z), atol=1e-14)
    a = _cert(_net(Ws, MaxMin()), method="neuron", solver="clarabel").bound
    b = _cert(_net(Ws, hh), method="neuron", solver="clarabel").bound
    assert a == pytest.approx(b, rel=1e-5)  # same QC up to solver accuracy (measured 1.2e-6)


def test_2fc16_full_and_chain_and_rr():
    net = lipsdp.load(require(MAXMIN / "weights_l2_2fc_16.mat"), activation="maxmin")
    full = _cert(net, method="neuron", solver="clarabel")
    chain = _cert(net, method="chain", solver="sdpa")
    rr = _cert(net, method="residual-relu", solver="cvxopt")
    # reference-values.md: P-free 22.0744 (sampled lower 22.0213), chain 22.594, LipSDP-RR 23.92
    assert full.bound == pytest.approx(22.0744, rel=2e-4) and full.bound >= 22.0213
    assert chain.bound == pytest.approx(22.594, rel=2e-4)
    assert rr.bound == pytest.approx(23.92, rel=5e-4)


@pytest.mark.slow
def test_2fc32_full_and_chain_and_rr():
    net = lipsdp.load(require(MAXMIN / "weights_l2_2fc_32.mat"), activation="maxmin")
    full = _cert(net, method="neuron", solver="sdpa")
    chain = _cert(net, method="chain", solver="sdpa")
    rr = _cert(net, method="residual-relu", solver="cvxopt")
    # reference-values.md: P-free 38.0750, chain 38.548, LipSDP-RR 40.28
    assert full.bound == pytest.approx(38.0750, rel=3e-4)
    assert chain.bound == pytest.approx(38.548, rel=2e-4)
    assert rr.bound == pytest.approx(40.28, rel=5e-4)


def test_residual_relu_refuses_householder():
    net = _net([np.eye(2), np.eye(2)], Householder(np.array([[0.6, 0.8]])))
    with pytest.raises(lipsdp.errors.FormulationError, match="residual-relu"):
        ResidualReLU(net)


# reference-values.md, QCs_MaxMin table: the S = P = 0 chain re-solved (column 4).  Run with
# `pytest -m slow`; the same networks are timed by benchmarks/table1.py and benchmarks/run.py.
# 8FC-128 is not here: the native solver's chain stalls at 782.65 vs 714.14 (the chain keeps
# γ free with no τ, so the preserved-subspace reduction does not apply).  The 18-layer networks'
# NSR is tested in test_reduced.py.
CHAIN_REF = {"2fc_64": 73.773, "2fc_128": 70.866, "5fc_32": 224.53, "5fc_64": 386.81, "8fc_32": 401.03,
             "8fc_64": 722.34}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHAIN_REF))
def test_table1_chain_matches_reference_and_nsr_is_tighter(name):
    """Chain (S = P = 0) reproduces the re-solved value; the P-free NSR is no worse than it and no
    better than the sampled lower bound; both checked (native solver)."""
    net = lipsdp.load(require(MAXMIN / f"weights_l2_{name}.mat"), activation="maxmin")
    chain = _cert(net, method="chain", solver="native")
    nsr = _cert(net, method="neuron", solver="native")
    assert chain.verified and nsr.verified
    assert chain.bound == pytest.approx(CHAIN_REF[name], rel=2e-4)
    low = float(lower_bound(net, norm="l2"))
    assert low <= nsr.bound <= chain.bound * (1 + 1e-6)
