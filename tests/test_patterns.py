"""lipsdp.patterns: the activation-pattern climb for ℓ2 lower bounds.

Reference values come from brute force: every activation pattern of a tiny bias-free ReLU net
is tested for a linear piece with an interior point (lipsdp.milp._realise, an LP in input
space with a positive margin), and the largest ‖J_a‖_2 = ‖W_l D_l … D_1 W_0‖_2 over those
pieces is the exact ℓ2 Lipschitz constant (f is continuous and piecewise linear).
"""

import itertools

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import FormulationError
from lipsdp.io import from_weights
from lipsdp.lower import lower_bound
from lipsdp.milp import _realise
from lipsdp.patterns import _patterns_of, pattern_search


def _net(dims, seed, biases=False):
    rng = np.random.default_rng(seed)
    W = [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
    bias = [rng.standard_normal(b) for b in dims[1:]] if biases else None
    return from_weights(W, biases=bias), W


def _exact_l2(net, W):
    widths = [w.shape[0] for w in W[:-1]]
    n = W[0].shape[1]
    best = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=sum(widths)):
        pattern = np.split(np.array(bits), np.cumsum(widths)[:-1])
        x, margin = _realise(net, pattern, -np.ones(n), np.ones(n))
        if x is None or margin <= 1e-9:
            continue
        J = W[0]
        for k, d in enumerate(pattern):
            J = W[k + 1] @ (d[:, None] * J)
        best = max(best, float(np.linalg.norm(J, 2)))
    return best


def _quotient(net, x, d, h, C=None):
    dy = net.forward(x + h * d) - net.forward(x)
    if C is not None:
        dy = C @ dy
    return float(np.linalg.norm(dy) / np.linalg.norm(h * d))


def _same_region(net, x, y):
    return all(np.array_equal(p[0], p[1]) for p in _patterns_of(net, np.vstack([x, y])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_climb_reaches_the_brute_force_constant_on_tiny_nets(seed):
    net, W = _net([3, 4, 5, 2], seed)
    exact = _exact_l2(net, W)
    X0 = np.random.default_rng(seed).standard_normal((4, 3))
    r = pattern_search(net, X0, time_budget=60.0, kicks=2, seed=seed, max_kicks=300)  # reproducible: ends after 20 kicks
    assert r.value == pytest.approx(exact, rel=1e-9)
    # a true quotient of the returned pair, inside one linear region
    assert _same_region(net, r.x, r.x + r.step * r.direction)
    assert _quotient(net, r.x, r.direction, r.step) == pytest.approx(r.value, rel=1e-9)
    assert r.quotient == pytest.approx(r.value, rel=1e-9)


def test_scipy_fallback_without_highspy(monkeypatch):
    from lipsdp import patterns

    monkeypatch.setattr(patterns._WarmLP, "create", classmethod(lambda cls: None))
    net, W = _net([3, 4, 5, 2], 0)
    r = pattern_search(net, np.random.default_rng(0).standard_normal((2, 3)), time_budget=60.0, kicks=2, max_kicks=300)
    assert r.value == pytest.approx(_exact_l2(net, W), rel=1e-9)
    assert _quotient(net, r.x, r.direction, r.step) == pytest.approx(r.value, rel=1e-9)


def test_climb_never_exceeds_the_sdp_bound_and_raises_the_start():
    net, _ = _net([10, 20, 20, 20, 4], 3)
    X0 = np.random.default_rng(0).standard_normal((2, 10))
    r = pattern_search(net, X0, time_budget=2.0, kicks=3)
    start = max(np.linalg.norm(net.jacobian(x), 2) for x in X0)
    assert r.value >= start * (1 - 1e-12)
    assert _quotient(net, r.x, r.direction, r.step) == pytest.approx(r.value, rel=1e-9)
    cert = lipsdp.certify(net)
    assert cert.verified
    assert r.quotient <= cert.bound


def test_biases_and_scalar_outputs():
    net, _ = _net([4, 8, 8, 3], 4, biases=True)
    c = np.array([1.0, -2.0, 0.5])
    X0 = np.random.default_rng(1).standard_normal((2, 4))
    r = pattern_search(net, X0, output=c, time_budget=1.0, kicks=2)
    assert _same_region(net, r.x, r.x + r.step * r.direction)
    assert _quotient(net, r.x, r.direction, r.step, C=c[None]) == pytest.approx(r.value, rel=1e-9)
    for x in X0:  # never worse than a start (both exact local gradient norms)
        assert r.value >= np.linalg.norm(c @ net.jacobian(x)) * (1 - 1e-12)


def test_lower_bound_option_is_a_true_quotient_and_only_helps():
    net, _ = _net([20, 30, 30, 30, 5], 5)
    base = lower_bound(net)
    lb = lower_bound(net, pattern_budget=1.0)
    assert lb.value >= base.value
    assert "activation-pattern climb" in lb.method
    assert _quotient(net, lb.x, lb.direction, lb.step) == pytest.approx(lb.value, rel=1e-12)
    one = lower_bound(net, output=1, pattern_budget=0.5)  # ℓ2 of one logit
    assert one.value >= lower_bound(net, output=1).value
    assert _quotient(net, one.x, one.direction, one.step, C=np.eye(5)[[1]]) == pytest.approx(one.value, rel=1e-12)


def test_unsupported_networks_are_refused_with_a_reason():
    rng = np.random.default_rng(0)
    net = from_weights([rng.standard_normal((4, 3)), rng.standard_normal((2, 4))], activation="tanh")
    with pytest.raises(FormulationError, match="ReLU"):
        pattern_search(net, np.zeros((1, 3)))
    # lower_bound silently skips the climb where it does not apply
    assert "activation-pattern" not in lower_bound(net, pattern_budget=1.0).method
