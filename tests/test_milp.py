"""lipsdp.milp: exact ℓ∞ / ℓ1 Lipschitz constants of small ReLU nets (LipMIP-style MILP, HiGHS).

Reference values come from brute force: every activation pattern of the tiny net is tested for
a linear piece with interior inside the domain (an LP with a positive margin), and the largest
dual norm of the piece's gradient W_0^T D_1 W_1^T D_2 W_2^T c is the exact constant.
"""

import itertools

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import FormulationError, InvalidNetworkError
from lipsdp.io import from_weights

highspy = pytest.importorskip("highspy", reason="the MILP needs highspy (pip install 'lipsdp[milp]')")

from lipsdp.lower import lower_bound  # noqa: E402
from lipsdp.milp import _realise, exact_lipschitz  # noqa: E402


def _net(dims, seed, biases=False, scale=1.0):
    rng = np.random.default_rng(seed)
    W = [scale * rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
    bias = [rng.standard_normal(b) for b in dims[1:]] if biases else None
    return from_weights(W, biases=bias), W


def _brute_force(net, W, c, norm, lo, hi):
    widths = [w.shape[0] for w in W[:-1]]
    best = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=sum(widths)):
        pattern = np.split(np.array(bits), np.cumsum(widths)[:-1])
        x, margin = _realise(net, pattern, lo, hi)
        if x is None or margin <= 1e-9:
            continue
        g = W[-1].T @ c
        for k in range(len(widths) - 1, -1, -1):
            g = W[k].T @ (pattern[k] * g)
        best = max(best, np.abs(g).sum() if norm == "linf" else np.abs(g).max())
    return best


@pytest.mark.parametrize("seed,biases", [(0, False), (1, False), (2, True), (3, True)])
@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_equals_brute_force_enumeration(seed, biases, norm):
    net, W = _net([3, 4, 3, 2], seed, biases)
    c = np.array([1.0, -1.0]) if seed % 2 else np.eye(2)[1]
    lo, hi = -np.ones(3), np.ones(3)
    ref = _brute_force(net, W, c, norm, lo, hi)
    res = exact_lipschitz(net, norm, output=c, time_limit=60)
    assert res.optimal and res.exact
    assert res.value == pytest.approx(ref, rel=1e-7)
    assert res.global_ == (not biases)
    # the realised quotient is a real difference quotient of the two inputs it names
    x2 = res.x + res.step * res.direction
    dx = x2 - res.x
    q = abs(c @ (net.forward(x2) - net.forward(res.x))) / (np.max(np.abs(dx)) if norm == "linf" else np.abs(dx).sum())
    assert q == pytest.approx(res.lower, rel=1e-12)
    assert res.lower == pytest.approx(ref, rel=1e-7)


def test_degenerate_origin_is_not_counted():
    """Without biases every pattern is consistent at x = 0; only linear pieces with interior count."""
    net, W = _net([3, 4, 3, 2], 1)
    c = np.array([1.0, -1.0])
    res = exact_lipschitz(net, "linf", output=c, margin=0.0)  # no margin: the origin admits any pattern
    ref = _brute_force(net, W, c, "linf", -np.ones(3), np.ones(3))
    assert res.value > 1.5 * ref  # measured 7.988 vs 4.003: why the margin is there
    assert exact_lipschitz(net, "linf", output=c).value == pytest.approx(ref, rel=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_sdp_exact_lower_ordering(seed):
    net, _ = _net([4, 6, 6, 2], seed)
    ex = exact_lipschitz(net, "linf", output=0)
    assert ex.exact
    cert = lipsdp.certify(net, norm="linf", output=0, lower=False, solver="cvxopt")
    assert cert.verified
    lb = lower_bound(net, norm="linf", output=0)
    assert cert.bound >= ex.value * (1 - 1e-9)
    assert ex.value >= lb.value * (1 - 1e-9)
    # the default lower bound runs the MILP on this small bias-free net: exact, and a true quotient
    assert lb.kind == "exact" and lb.upper == pytest.approx(ex.value, rel=1e-6)
    x2 = lb.x + lb.step * lb.direction
    q = abs(net.forward(x2)[0] - net.forward(lb.x)[0]) / np.max(np.abs(x2 - lb.x))
    assert q == pytest.approx(lb.value, rel=1e-9)


def test_lower_bound_kind_and_errors():
    net, _ = _net([4, 6, 2], 0, biases=True)
    assert lower_bound(net, norm="linf", output=1).kind == "quotient"  # biases: no global MILP
    with pytest.raises(FormulationError, match="without biases"):
        lower_bound(net, norm="linf", output=1, exact=True)
    assert lower_bound(net, norm="l2").kind == "quotient"
    with pytest.raises(FormulationError, match="outputs"):
        exact_lipschitz(net, "linf")
    with pytest.raises(FormulationError, match="'linf' or 'l1'"):
        exact_lipschitz(net, "l2", output=0)
    tanh = from_weights([np.ones((2, 2)), np.ones((1, 2))], activation="tanh")
    with pytest.raises(InvalidNetworkError, match="ReLU only"):
        exact_lipschitz(tanh)


def test_affine_network_closed_form():
    W = np.random.default_rng(0).standard_normal((3, 5))
    net = from_weights([W])
    assert exact_lipschitz(net, "linf", output=2).value == pytest.approx(np.abs(W[2]).sum())
    assert exact_lipschitz(net, "l1", output=2).value == pytest.approx(np.abs(W[2]).max())


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_forward_and_backward_formulations_agree(norm):
    net, _ = _net([4, 6, 5, 2], 7)
    fwd = exact_lipschitz(net, norm, output=1, formulation="forward")
    bwd = exact_lipschitz(net, norm, output=1, formulation="backward")
    assert fwd.exact and bwd.exact
    assert fwd.value == pytest.approx(bwd.value, rel=1e-7)
