"""lipsdp.local: local Lipschitz bounds over a region (bound propagation → per-neuron slopes → SDP).

Soundness properties on random nets (ReLU, tanh, MaxMin): the local bound is ≤ the global bound,
≥ every difference quotient sampled with both inputs in the region, and equal to the global bound
(within solver accuracy) when the region is huge; stable ReLUs get the exact slopes 0 / 1.
"""

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import FormulationError
from lipsdp.io import from_weights
from lipsdp.local import (Box, L2Ball, LinfBall, certify_local, local_slopes, localize, preactivation_bounds,
                          region_lower_bound)


def _preactivations(net, X):
    """The inputs of every activation layer for the inputs X (forward pass)."""
    out, v = [], X
    for layer in net.layers:
        if not hasattr(layer, "weight"):
            out.append(v)
        v = layer.forward(v)
    return out


def _net(act, seed, dims=(5, 10, 10, 3)):
    rng = np.random.default_rng(seed)
    W = [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
    b = [0.5 * rng.standard_normal(k) for k in dims[1:]]
    return from_weights(W, activation=act, biases=b), rng


def _sampled_quotients(net, region, rng, norm="l2", k=400):
    n = net.input_dim
    X = region.sample(rng, k, n)
    D = rng.standard_normal((k, n))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Y = region.project(X + 1e-3 * D, n)
    dx = Y - X
    dn = np.linalg.norm(dx, axis=1) if norm == "l2" else np.abs(dx).max(axis=1)
    ok = dn > 0
    q = np.linalg.norm(net.forward(Y) - net.forward(X), axis=1)[ok] / dn[ok]
    # plus pairs of independent points of the region
    X2 = region.sample(rng, k, n)
    dx2 = X2 - X
    dn2 = np.linalg.norm(dx2, axis=1)
    q2 = np.linalg.norm(net.forward(X2) - net.forward(X), axis=1) / dn2
    return max(q.max(), q2.max())


@pytest.mark.parametrize("act", ["relu", "tanh", "maxmin"])
@pytest.mark.parametrize("seed", [0, 1])
def test_local_between_sampled_quotients_and_global(act, seed):
    net, rng = _net(act, seed)
    glob = lipsdp.certify(net, lower=False).bound
    x0 = rng.standard_normal(5)
    for region in (LinfBall(x0, 0.05), L2Ball(x0, 0.1), Box(x0 - 0.2, x0 + 0.1)):
        cert = certify_local(net, region)
        assert cert.verified and cert.region["description"] == region.describe() and "local bound" in cert.message
        assert cert.bound <= glob * (1 + 1e-6)
        sampled = _sampled_quotients(net, region, rng)
        assert cert.bound >= sampled * (1 - 1e-9)
        assert cert.bound >= cert.lower_bound * (1 - 1e-9)
        assert cert.lower_bound >= 0.5 * sampled  # the in-region search finds comparable quotients


@pytest.mark.parametrize("act", ["relu", "tanh", "maxmin"])
def test_huge_region_gives_global(act):
    net, _ = _net(act, 3)
    glob = lipsdp.certify(net, lower=False).bound
    loc = certify_local(net, Box(-1e4, 1e4), lower=False).bound
    assert loc == pytest.approx(glob, rel=2e-3)


def test_relu_local_is_much_smaller_on_a_small_ball():
    net, rng = _net("relu", 0)
    glob = lipsdp.certify(net, lower=False).bound
    loc = certify_local(net, LinfBall(rng.standard_normal(5), 1e-3), lower=False)
    assert loc.bound < 0.8 * glob


def test_stable_neuron_slopes_exact():
    net, rng = _net("relu", 1)
    x0 = rng.standard_normal(5)
    region = LinfBall(x0, 1e-4)
    bounds = preactivation_bounds(net, region)
    loc = localize(net, region, prune=False)
    # pre-activations at x0 lie in the bounds; stable neurons have slopes exactly 0 or 1
    acts = loc.activations
    for k, (v, (lo, hi)) in enumerate(zip(_preactivations(net, x0), bounds, strict=True)):
        assert np.all(lo <= v + 1e-12) and np.all(v <= hi + 1e-12)
        on, off = lo >= 0, hi <= 0
        assert np.all(on | off)  # radius 1e-4: every neuron stable here
        assert np.array_equal(acts[k].alpha[on], np.ones(on.sum())) and np.array_equal(acts[k].beta[on], np.ones(on.sum()))
        assert np.array_equal(acts[k].alpha[off], np.zeros(off.sum())) and np.array_equal(acts[k].beta[off], np.zeros(off.sum()))


def test_smooth_local_slopes_contain_derivative():
    act = lipsdp.SlopeRestricted("tanh").with_size(4)
    lo, hi = np.array([-3.0, -0.5, 0.2, 1.0]), np.array([-1.0, 0.5, 0.9, 4.0])
    a, b = local_slopes(act, lo, hi)
    for i in range(4):
        t = np.linspace(lo[i], hi[i], 1001)
        d = 1 - np.tanh(t) ** 2
        assert a[i] <= d.min() and d.max() <= b[i]
        assert b[i] - a[i] <= d.max() - d.min() + 1e-9  # tight (unimodal φ')
    for fn in ("silu", "gelu", "sigmoid", "softplus", "elu", "leaky_relu", "hardtanh"):
        act = lipsdp.SlopeRestricted(fn).with_size(4)
        a, b = local_slopes(act, lo, hi)
        for i in range(4):
            t = np.linspace(lo[i], hi[i], 2001)
            q = np.diff(act.forward(t)) / np.diff(t)  # chord slopes inside the interval
            assert np.all(q >= a[i] - 1e-9) and np.all(q <= b[i] + 1e-9), fn


def test_crown_tighter_or_equal_than_ibp():
    net, rng = _net("relu", 2, dims=(5, 20, 20, 20, 3))
    region = LinfBall(rng.standard_normal(5), 0.3)
    ibp = preactivation_bounds(net, region, crown=False)
    crown = preactivation_bounds(net, region, crown=True)
    X = region.sample(rng, 500, 5)
    widths = []
    for (l1, u1), (l2, u2) in zip(ibp, crown):
        assert np.all(l2 >= l1 - 1e-12) and np.all(u2 <= u1 + 1e-12)
        widths.append(((u1 - l1).sum(), (u2 - l2).sum()))
    assert widths[-1][1] < widths[-1][0]
    # and still sound: sampled pre-activations inside
    for v, (lo, hi) in zip(_preactivations(net, X), crown, strict=True):
        assert np.all(v >= lo - 1e-9) and np.all(v <= hi + 1e-9)


def test_maxmin_fixed_order_becomes_linear():
    net, rng = _net("maxmin", 0)
    region = LinfBall(rng.standard_normal(5), 1e-6)
    loc = localize(net, region)
    assert loc.activations == [] and loc.output_dim == 3  # every pair has a fixed order: one linear map
    X = region.sample(rng, 20, 5)
    assert np.allclose(loc.forward(X), net.forward(X), atol=1e-12)  # the same function on the region


def test_region_lower_bound_is_in_region_quotient():
    net, rng = _net("tanh", 0)
    region = L2Ball(rng.standard_normal(5), 0.2)
    lb = region_lower_bound(net, region)
    cert = certify_local(net, region, lower=False)
    assert 0 < lb <= cert.bound


def test_region_errors():
    net, _ = _net("relu", 0)
    with pytest.raises(FormulationError, match="region"):
        localize(net, "ball")
    with pytest.raises(FormulationError, match="inputs"):
        localize(net, L2Ball(np.zeros(3), 0.1))
    with pytest.raises(FormulationError, match="lo <= hi"):
        localize(net, Box(1.0, 0.0))


@pytest.mark.parametrize("act", ["tanh", "silu", "sigmoid", "leaky_relu"])
def test_crown_sound_for_smooth_activations(act):
    net, rng = _net(act, 4, dims=(5, 16, 16, 16, 2))
    region = L2Ball(rng.standard_normal(5), 0.5)
    bounds = preactivation_bounds(net, region)
    for v, (lo, hi) in zip(_preactivations(net, region.sample(rng, 2000, 5)), bounds, strict=True):
        assert np.all(v >= lo - 1e-9) and np.all(v <= hi + 1e-9)


def test_residual_network_is_localised_by_ibp():
    from lipsdp.ir import Affine, Network, Residual, SlopeRestricted

    rng = np.random.default_rng(0)
    A = [rng.standard_normal((6, 4)) / 2, rng.standard_normal((6, 6)) / 3, rng.standard_normal((6, 6)) / 3,
         rng.standard_normal((2, 6)) / 2]
    net = Network([Affine(A[0], rng.standard_normal(6)), Residual((Affine(A[1], rng.standard_normal(6)),
                   SlopeRestricted("relu"), Affine(A[2]))), SlopeRestricted("relu"), Affine(A[3])])
    glob = lipsdp.certify(net, lower=False).bound
    region = LinfBall(rng.standard_normal(4), 0.01)
    loc = localize(net, region)
    assert not loc.is_feedforward
    cert = certify_local(net, region)
    assert cert.verified and cert.bound <= glob * (1 + 1e-6)
    assert cert.bound >= _sampled_quotients(net, region, rng) * (1 - 1e-9)


def test_pruned_inactive_neurons_same_function_and_bound():
    net, rng = _net("relu", 6, dims=(5, 20, 20, 3))
    region = LinfBall(rng.standard_normal(5), 0.05)
    full, pruned = localize(net, region, prune=False), localize(net, region)
    assert sum(a.size for a in pruned.activations) < sum(a.size for a in full.activations)
    X = region.sample(rng, 100, 5)
    assert np.allclose(pruned.forward(X), net.forward(X), atol=1e-12)
    a = lipsdp.certify(full, lower=False).bound
    b = lipsdp.certify(pruned, lower=False).bound
    assert b == pytest.approx(a, rel=1e-4)


def test_cli_region_gives_a_checked_local_bound(tmp_path, capsys):
    """`lipsdp certify ... --region l2:EPS:X0`: the certificate records the region, its bound is at
    most the global one and at least the in-region lower bound; a malformed spec exits 2."""
    import json

    from lipsdp.cli import demo_path, main

    x0 = np.random.default_rng(0).uniform(0, 16, 64)
    np.save(tmp_path / "x0.npy", x0)
    out = tmp_path / "c.json"
    assert main(["certify", demo_path(), "--region", f"l2:0.1:{tmp_path / 'x0.npy'}", "--out", str(out)]) == 0
    cert = json.loads(out.read_text())
    glob = lipsdp.certify(demo_path(), lower=False)
    assert cert["verified"] and cert["region"]["type"] == "L2Ball"
    assert cert["lower_bound"] <= cert["bound"] <= glob.bound * (1 + 1e-9)
    assert main(["certify", demo_path(), "--region", "box:0:16"]) == 0  # the whole input box of the digits data
    capsys.readouterr()
    assert main(["certify", demo_path(), "--region", "ball:0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected l2:EPS:X0" in err[0]
