"""lipsdp.ascent: the gradient of u^T J(x) v on the smoothed network matches finite differences
(feedforward, residual, MaxMin, Householder, tanh), and the ascent raises the Jacobian norm."""

import numpy as np
import pytest

from lipsdp.ascent import _Forward, _objective_grad, jacobian_ascent
from lipsdp.io import from_weights
from lipsdp.ir import Affine, Householder, MaxMin, Network, Residual, SlopeRestricted


def _nets():
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((6, 4)), rng.standard_normal((6, 6)), rng.standard_normal((3, 6))]
    b = [rng.standard_normal(6), rng.standard_normal(6), None]
    yield "relu", from_weights(W, biases=b)
    yield "tanh", from_weights(W, activation="tanh", biases=b)
    yield "maxmin", from_weights(W, activation="maxmin", biases=b)
    yield "householder", Network([Affine(W[0], b[0]), Householder(rng.standard_normal(2)), Affine(W[1]),
                                  Householder(rng.standard_normal(3)), Affine(W[2])])
    yield "residual", Network([Affine(W[0], b[0]), Residual((Affine(W[1] / 3, b[1]), SlopeRestricted("relu"),
                                                             Affine(W[1].T / 3))),
                               SlopeRestricted("softplus"), Affine(W[2])])


@pytest.mark.parametrize("name,net", list(_nets()))
def test_smoothed_gradient_matches_finite_differences(name, net, monkeypatch):
    from lipsdp import ascent

    # the temperature follows the layer's scale during the ascent; frozen here so σ is one function
    monkeypatch.setattr(ascent, "_temperature", lambda tau, values: tau)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 4))
    U = rng.standard_normal((3, 3))
    V = rng.standard_normal((3, 4))
    tau = 0.3

    def sigma(X):
        lin = _Forward(net.layers, X).linearise(tau)
        return np.einsum("bi,bi->b", U, lin.tangent(V))

    fwd = _Forward(net.layers, X)
    _, g = _objective_grad(fwd.linearise(tau), U, V, fwd.linearise(0.0))
    h = 1e-6
    for j in range(4):
        E = np.zeros_like(X)
        E[:, j] = h
        fd = (sigma(X + E) - sigma(X - E)) / (2 * h)
        assert np.allclose(g[:, j], fd, rtol=1e-4, atol=1e-6), (name, j)


@pytest.mark.parametrize("name,net", list(_nets()))
def test_true_linearisation_is_the_jacobian(name, net):
    X = np.random.default_rng(2).standard_normal((2, 4))
    lin = _Forward(net.layers, X).linearise(0.0)
    for b in range(2):
        J = net.jacobian(X[b])
        assert np.allclose(lin.tangent(np.tile(np.eye(4)[0], (2, 1)))[b], J[:, 0])
        assert np.allclose(lin.adjoint(np.tile(np.eye(3)[1], (2, 1)))[b], J[1])


def test_ascent_raises_the_jacobian_norm():
    rng = np.random.default_rng(0)
    dims = [20, 30, 30, 30, 5]
    net = from_weights([rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])])
    X0 = rng.standard_normal((16, 20))
    start = max(np.linalg.norm(net.jacobian(x), 2) for x in X0)
    X, V, S = jacobian_ascent(net, "l2", None, X0, steps=60)
    assert S.max() > 1.1 * start
    i = int(np.argmax(S))
    assert S[i] == pytest.approx(np.linalg.norm(net.jacobian(X[i]), 2), rel=1e-6)
