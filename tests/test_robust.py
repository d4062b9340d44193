"""lipsdp.certified_accuracy: margin bound, monotone in the radius, consistent with a direct check."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import LipSDPError
from lipsdp.robust import certified_radii


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    Ws = [rng.standard_normal((8, 4)) / 2, rng.standard_normal((3, 8)) / 3]
    net = lipsdp.from_weights(Ws)
    X = rng.standard_normal((200, 4))
    y = net.forward(X).argmax(1)
    flip = rng.random(200) < 0.2          # some misclassified points
    y[flip] = (y[flip] + 1) % 3
    return net, X, y


RADII = [0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0]


def test_monotone_and_direct_check(setup):
    net, X, y = setup
    res = lipsdp.certified_accuracy(net, X, y, RADII, solver="cvxopt")
    acc = np.asarray(res.accuracy)
    assert np.all(np.diff(acc) <= 0), acc
    # direct: margin > sqrt(2) L eps with the certified bound of the whole network
    L = lipsdp.certify(net, solver="cvxopt", lower=False).bound
    f = net.forward(X)
    fy = f[np.arange(len(y)), y]
    other = np.where(np.eye(3, dtype=bool)[y], -np.inf, f).max(1)
    m = fy - other
    for eps, a in zip(RADII, acc):
        direct = np.mean(m > 0) if eps == 0 else np.mean(m > math.sqrt(2) * L * eps)
        assert a == pytest.approx(direct, abs=1e-12), (eps, a, direct)
    assert res.clean_accuracy == pytest.approx(np.mean(m > 0))
    assert 0.5 < res.clean_accuracy < 0.95      # the fixture flipped ~20% of the labels
    assert res.accuracy[-1] < res.accuracy[0]    # the curve actually drops on this net
    assert res.to_frame().shape == (len(RADII), 2)


def test_pairwise_is_tighter_and_sound(setup):
    net, X, y = setup
    base = lipsdp.certified_accuracy(net, X, y, RADII, solver="cvxopt")
    pair = lipsdp.certified_accuracy(net, X, y, RADII, pairwise=True, solver="cvxopt")
    assert np.all(pair.radii_per_point >= base.radii_per_point - 1e-12)
    assert np.all(np.asarray(pair.accuracy) >= np.asarray(base.accuracy))
    # L_ij ≤ sqrt(2) L for every pair (‖e_i − e_j‖ = sqrt(2)), and ≥ a sampled lower bound
    Lnet = base.L[0, 1] / math.sqrt(2)
    for (i, j), c in pair.certificates.items():
        assert pair.L[i, j] == pair.L[j, i] <= math.sqrt(2) * Lnet * (1 + 1e-6)
        e = np.zeros(3); e[i], e[j] = 1, -1
        assert pair.L[i, j] >= float(lipsdp.lower_bound(net, output=e)) * (1 - 1e-9)
    # soundness: random perturbations inside the certified radius never flip the prediction
    rng = np.random.default_rng(0)
    ok = np.flatnonzero(pair.radii_per_point > 0)
    for k in ok[:50]:
        r = pair.radii_per_point[k]
        d = rng.standard_normal((64, 4))
        d *= 0.999 * r / np.linalg.norm(d, axis=1, keepdims=True)
        assert np.all(net.forward(X[k] + d).argmax(1) == y[k])


def test_linf_uses_linf_certificates_or_says_so(setup):
    net, X, y = setup
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = lipsdp.certified_accuracy(net, X[:50], y[:50], [0.0, 0.01, 0.05], norm="linf", solver="cvxopt")
    assert np.all(np.diff(res.accuracy) <= 0)
    assert "ℓ∞" in res.bounds_from or "sqrt(n)" in res.bounds_from
    # every pairwise ℓ∞ bound must be ≥ a sampled ℓ∞ lower bound of that logit difference
    e = np.zeros(3); e[0], e[1] = 1, -1
    assert res.L[0, 1] >= float(lipsdp.lower_bound(net, norm="linf", output=e)) * (1 - 1e-9)


def test_certified_radii_edge_cases():
    logits = np.array([[2.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([0, 0, 0])
    L = np.array([[0.0, 2.0], [2.0, 0.0]])
    r, correct = certified_radii(logits, y, L)
    assert correct.tolist() == [True, False, False]   # a tie is not a correct prediction
    assert r.tolist() == [0.5, 0.0, 0.0]


def test_errors(setup):
    net, X, y = setup
    with pytest.raises(LipSDPError, match="features"):
        lipsdp.certified_accuracy(net, X[:, :3], y, [0.1])
    with pytest.raises(LipSDPError, match="radii"):
        lipsdp.certified_accuracy(net, X, y, [-1.0])
    with pytest.raises(LipSDPError, match="labels"):
        lipsdp.certified_accuracy(net, X, y + 5, [0.1])
