"""Implicit (equilibrium) models (lipsdp/formulations/implicit.py, math.md §8)."""

import types

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import InvalidNetworkError
from lipsdp.formulations.implicit import ImplicitNetwork, implicit_lower_bound
from lipsdp.ir import GroupSort


def _model(act="relu", seed=1, scale=0.6):
    rng = np.random.default_rng(seed)
    n, d, m = 8, 5, 3
    W = rng.standard_normal((n, n))
    W *= scale / np.linalg.norm(W, 2)
    return ImplicitNetwork(W, rng.standard_normal((n, d)), rng.standard_normal((m, n)), act, b=rng.standard_normal(n))


@pytest.mark.parametrize("act", ["relu", "maxmin"])
def test_wellposed_model_certifies_above_sampled_lower_bound(act):
    model = _model(act)
    c = lipsdp.certify(model, solver="sdpa")
    assert c.verified and "well-posed" in c.message
    assert c.lower_bound <= c.bound <= c.naive_bound
    z = model.equilibrium(np.ones(5))  # the fixed point really is one
    np.testing.assert_allclose(z[0], model.activation.forward(model.W @ z[0] + model.U @ np.ones(5) + model.b), atol=1e-12)


def test_jacobian_matches_finite_differences():
    model = _model("relu", seed=3)
    x = np.random.default_rng(0).standard_normal(5)
    J = model.jacobian(x)
    h = 1e-6
    Jfd = np.column_stack([(model.forward(x + h * e) - model.forward(x - h * e)) / (2 * h) for e in np.eye(5)])
    np.testing.assert_allclose(J, Jfd, atol=1e-5)


def test_spec_is_coerced_explicitly_never_duck_typed():
    m = _model("maxmin")
    spec = types.SimpleNamespace(W=m.W, U=m.U, C=m.C, b=m.b, activation=GroupSort(2, size=8))
    with pytest.raises(InvalidNetworkError, match="SimpleNamespace"):
        lipsdp.certify(spec, solver="sdpa", lower=False)  # no routing by attribute names
    c = lipsdp.certify(ImplicitNetwork.coerce(spec), solver="sdpa", lower=False)
    assert c.verified and c.bound == pytest.approx(lipsdp.certify(m, solver="sdpa", lower=False).bound, rel=1e-6)


def test_every_option_reaches_implicit_models():
    """Issue 13: output, decompose and memory_limit used to be ignored for implicit models."""
    m = _model()
    full = lipsdp.certify(m, solver="sdpa", lower=False)
    one = lipsdp.certify(m, output=0, solver="sdpa", lower=False)
    assert one.verified and one.output == 0
    # one output's bound: at most the all-outputs one, at least a sampled quotient of that output
    assert one.bound <= full.bound * (1 + 1e-6)
    assert one.bound >= implicit_lower_bound(m, samples=8, output=0) * (1 - 1e-9)
    with pytest.raises(lipsdp.errors.FormulationError, match="decompose"):
        lipsdp.certify(m, decompose="bogus")
    with pytest.raises(lipsdp.errors.MemoryLimitError):
        lipsdp.certify(m, memory_limit=1000)
    with pytest.raises(lipsdp.errors.FormulationError, match="out of range"):
        lipsdp.certify(m, output=7)


def test_invalid_shapes_raise():
    with pytest.raises(InvalidNetworkError, match="square"):
        ImplicitNetwork(np.ones((3, 2)), np.ones((3, 2)), np.ones((1, 3)))
    with pytest.raises(InvalidNetworkError, match="rows"):
        ImplicitNetwork(np.eye(3), np.ones((2, 2)), np.ones((1, 3)))


def test_ill_posed_model_is_not_certified():
    """W = 1.5 I with ReLU: z = ReLU(1.5 z + x) has no equilibrium for x > 0; never certified."""
    model = ImplicitNetwork(1.5 * np.eye(2), np.eye(2), np.eye(2), "relu")
    try:
        c = lipsdp.certify(model, solver="sdpa", lower=False)
    except lipsdp.errors.SolverError:
        return
    assert not c.verified


def test_lower_bound_helper_is_positive():
    assert implicit_lower_bound(_model(), samples=4) > 0
