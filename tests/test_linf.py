"""ℓ∞ bounds of a scalar output (lipsdp/formulations/linf.py, math.md §6).

No refdata golden values: reference-values.md records that ℓ∞ was not re-solved for the
784-input networks.  These tests check the properties that must hold: sampled lower bound ≤
bound ≤ min(naive, sqrt(n_0)·ℓ2), exactness for linear maps, and the check's ρ_min is tight.
"""

import math

import numpy as np
import pytest

import lipsdp
from lipsdp.formulations.linf import FeedforwardLinf, check_linf
from lipsdp.ir import Affine, GroupSort, Householder, MaxMin, Network, SlopeRestricted
from lipsdp.lower import lower_bound


def _net(Ws, act):
    layers = [Affine(Ws[0])]
    for W in Ws[1:]:
        layers += [act, Affine(W)]
    return Network(layers)


def _weights(seed, n0=5):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, n0)), rng.standard_normal((6, 8)), rng.standard_normal((3, 6))]


@pytest.mark.parametrize("act", [SlopeRestricted("relu"), MaxMin(), GroupSort(3), Householder(np.array([[0.6, 0.8]]))])
def test_linf_sandwich(act):
    Ws = _weights(0) if not isinstance(act, GroupSort) or act.group_size == 2 else \
        [np.random.default_rng(0).standard_normal((6, 5)), np.random.default_rng(1).standard_normal((6, 6)),
         np.random.default_rng(2).standard_normal((3, 6))]
    net = _net(Ws, act)
    c = lipsdp.certify(net, norm="linf", output=1, method="neuron", solver="clarabel", lower=False)
    l2 = lipsdp.certify(net, norm="l2", output=1, method="neuron", solver="clarabel", lower=False)
    lb = float(lower_bound(net, norm="linf", output=1))
    assert c.verified and l2.verified
    assert lb <= c.bound <= c.naive_bound
    assert c.bound <= math.sqrt(net.input_dim) * l2.bound * (1 + 1e-7)


def test_chain_is_looser_than_full():
    net = _net(_weights(1), MaxMin())
    full = lipsdp.certify(net, norm="linf", output=0, method="neuron", solver="clarabel", lower=False)
    chain = lipsdp.certify(net, norm="linf", output=0, method="chain", solver="clarabel", lower=False)
    assert full.verified and chain.verified and full.bound <= chain.bound * (1 + 1e-7)


def test_margin_vector_output():
    net = _net(_weights(2), SlopeRestricted("relu"))
    c = np.array([1.0, -1.0, 0.0])
    cert = lipsdp.certify(net, norm="linf", output=c, solver="clarabel")
    assert cert.verified and cert.lower_bound <= cert.bound <= cert.naive_bound


def test_all_logits_reports_max_and_per_output():
    net = _net(_weights(3), MaxMin())
    cert = lipsdp.certify(net, norm="linf", solver="clarabel", lower=False)
    assert cert.verified and len(cert.per_output) == 3
    assert cert.bound == max(cert.per_output)
    one = lipsdp.certify(net, norm="linf", output=2, solver="clarabel", lower=False)
    assert cert.per_output[2] == pytest.approx(one.bound, rel=1e-9)


def test_linear_map_is_exact_l1_norm():
    w = np.array([[1.0, -2.0, 0.5]])
    cert = lipsdp.certify(Network([Affine(w)]), norm="linf", output=0, lower=False)
    assert cert.verified and cert.bound == pytest.approx(3.5, rel=1e-15) and cert.bound >= 3.5


def test_check_recomputes_rho_from_multipliers():
    """The check derives ρ from the multipliers alone (never the solver's ρ)."""
    net = _net(_weights(4), MaxMin())
    form = FeedforwardLinf(net, "neuron", output=0)
    from lipsdp.backends import SolveOptions, get_backend

    prob = form.problem()
    rec = form.recover(prob, get_backend("clarabel").solve(prob, SolveOptions()).theta)
    res = check_linf(form.Ws, form.qcs, rec.layers, rec.tau)
    assert res.verified and res.rho >= res.rho_min
    bad = check_linf(form.Ws, form.qcs, rec.layers, rec.tau * (1 - 0.5))  # τ halved: ρ_min must change
    assert bad.rho_min != pytest.approx(res.rho_min, rel=1e-6) or not bad.verified


def test_linf_without_output_on_scalar_network():
    net = _net([np.eye(2), np.ones((1, 2))], MaxMin())
    cert = lipsdp.certify(net, norm="linf", solver="clarabel", lower=False)
    assert cert.verified and 2.0 - 1e-9 <= cert.bound <= 2.0 + 1e-5  # f = a + b: ℓ∞ constant 2


def test_linf_residual_relu_refused():
    with pytest.raises(lipsdp.errors.FormulationError):
        lipsdp.certify(_net(_weights(5), MaxMin()), norm="linf", output=0, method="residual-relu")
