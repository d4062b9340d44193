"""Residual networks by the lifted LMI (lipsdp/formulations/residual.py, math.md §7).

Golden values: reference-values.md, resweights_5_32: residual product of norms 55.649 and the
S = P = 0 lifted SDP (product form) 33.04; free S/P with W_in/W_out folded can only be lower.
Measured here (SDPA, P free): 20.616; sampled lower bound 16.93.
"""

import numpy as np
import pytest
import scipy.io as sio

import lipsdp
from lipsdp.formulations import FeedforwardL2
from lipsdp.formulations.residual import LiftedL2, ResidualL2, residual_from_weights
from lipsdp.ir import Affine, GroupSort, MaxMin, Network, Residual, SlopeRestricted
from lipsdp.lower import lower_bound

from .refdata import MAXMIN, require


def _small(seed=0):
    rng = np.random.default_rng(seed)
    return Network([
        Affine(rng.standard_normal((4, 3))),
        Residual((Affine(0.5 * rng.standard_normal((6, 4))), MaxMin(), Affine(0.5 * rng.standard_normal((4, 6))))),
        Residual((Affine(0.5 * rng.standard_normal((4, 4))), SlopeRestricted("relu"))),
        Residual((Affine(0.5 * rng.standard_normal((6, 4))), GroupSort(3), Affine(0.5 * rng.standard_normal((4, 6))))),
        Affine(rng.standard_normal((2, 4))),
    ])


def test_lifting_reproduces_forward_pass():
    """C ξ = f(x) when ξ = [x; every activation output] (the lifting is an identity)."""
    net = _small()
    form = ResidualL2(net)
    x = np.random.default_rng(1).standard_normal(3)
    xi = [x]
    y = x
    for layer in net.layers:
        if isinstance(layer, Residual):
            v = layer.body[0].forward(y)
            w = layer.body[1].forward(v)
            xi.append(w)
        y = layer.forward(y)
    xi = np.concatenate(xi)
    np.testing.assert_allclose(form.orig.C @ xi, net.forward(x), rtol=1e-12, atol=1e-12)
    for A, a in zip(form.orig.A, form.orig.qcs):
        assert A.shape == (a.n, xi.size)


@pytest.mark.parametrize("method", ["neuron", "chain"])
def test_small_residual_sandwich(method):
    net = _small()
    c = lipsdp.certify(net, method=method, solver="sdpa")
    assert c.verified
    assert c.lower_bound <= c.bound <= c.naive_bound


def test_lifted_feedforward_equals_feedforward_formulation():
    rng = np.random.default_rng(2)
    net = Network([Affine(rng.standard_normal((6, 4))), MaxMin(), Affine(rng.standard_normal((4, 6))), MaxMin(),
                   Affine(rng.standard_normal((2, 4)))])
    from lipsdp.backends import SolveOptions, get_backend

    vals = []
    # the feedforward side is solved on the preserved subspace (what certify does): the full P-free
    # feedforward problem's optimum is not attained, and SDPA 0.2.3 stops 3e-4 above it there
    for make in (lambda: LiftedL2(net, "neuron"), lambda: FeedforwardL2(net, "neuron")):
        form = make()
        prob = form.problem()
        rec = form.recover(prob, get_backend("sdpa").solve(prob, SolveOptions()).theta)
        chk = form.check(rec)
        assert chk.verified
        vals.append(form.bound_from_rho(chk.rho))
    assert vals[0] == pytest.approx(vals[1], rel=1e-5)


def _resweights(name):
    W = sio.loadmat(require(MAXMIN / f"{name}.mat"))["W"]
    return residual_from_weights([W.flat[k] for k in range(W.size)], name=name)


def test_resweights_5_32_below_references():
    net = _resweights("resweights_5_32")
    c = lipsdp.certify(net, method="neuron", solver="sdpa")
    assert c.verified
    assert c.naive_bound == pytest.approx(55.649, rel=1e-4)  # reference-values.md residual MP
    assert c.lower_bound <= c.bound <= 33.04  # ≤ the S = P = 0 product-form SDP value
    assert c.bound == pytest.approx(20.616, rel=2e-3)  # measured (SDPA, P free, folded)


@pytest.mark.slow
def test_resweights_5_32_chain():
    c = lipsdp.certify(_resweights("resweights_5_32"), method="chain", solver="cvxopt")
    assert c.verified and c.bound <= 33.04
    assert c.bound == pytest.approx(23.1753, rel=2e-4)  # measured (CVXOPT, S = P = 0, folded)


def test_dense_lifting_beyond_memory_is_refused_before_allocating(monkeypatch):
    """A residual network whose dense lifting cannot fit gets a MemoryLimitError, not an
    out-of-memory kill (GLipSDP's C-R18 needed ≈ 128 GiB)."""
    from lipsdp import memory
    from lipsdp.errors import MemoryLimitError

    monkeypatch.setattr(memory, "default_memory_limit", lambda: 1000)
    with pytest.raises(MemoryLimitError, match="residual formulation lifts the network"):
        lipsdp.certify(_small(), lower=False)
