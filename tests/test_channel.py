"""method="channel": one multiplier per channel (GLipSDP, Pauli et al. 2024, arXiv 2405.01125).

A sub-family of the neuron-wise multipliers, so on every network neuron ≤ channel ≤ layer, and on
a dense MLP (each neuron its own channel) channel = neuron."""

import numpy as np
import pytest

import lipsdp
from lipsdp import Affine, Network, SlopeRestricted
from lipsdp.constraints import constraint_for
from lipsdp.errors import InvalidNetworkError
from lipsdp.linop import Conv


def _cnn(seed=0):
    """conv(1→3, k3, p1) on 8×8 → relu → conv(3→3, k3, s2, p1) → relu → linear(48→5): 240 hidden
    neurons; seeded Gaussian kernels scaled by 1/sqrt(fan-in)."""
    rng = np.random.default_rng(seed)
    c1 = Conv(rng.standard_normal((3, 1, 3, 3)) / 3.0, (1, 8, 8), stride=1, padding=1)
    c2 = Conv(rng.standard_normal((3, 3, 3, 3)) / np.sqrt(27), (3, 8, 8), stride=2, padding=1)
    head = rng.standard_normal((5, 48)) / np.sqrt(48)
    return Network([Affine(c1, rng.standard_normal(192)), SlopeRestricted("relu"),
                    Affine(c2, rng.standard_normal(48)), SlopeRestricted("relu"), Affine(head)])


def test_network_sets_the_channel_layout():
    net = _cnn()
    assert [a.channels for a in net.activations] == [3, 3]
    assert [a.size for a in net.activations] == [192, 48]
    # after a dense layer: no layout; a merged conv keeps the later map's layout
    rng = np.random.default_rng(1)
    dense = Network([Affine(rng.standard_normal((6, 4))), SlopeRestricted("relu"), Affine(rng.standard_normal((2, 6)))])
    assert dense.activations[0].channels is None
    conv = Conv(rng.standard_normal((3, 1, 3, 3)), (1, 5, 5), padding=1)
    merged = Network([Affine(rng.standard_normal((25, 25))), Affine(conv), SlopeRestricted("relu"),
                      Affine(rng.standard_normal((2, 75)))])
    assert merged.activations[0].channels == 3
    unmerged = Network([Affine(conv), Affine(rng.standard_normal((10, 75))), SlopeRestricted("relu"),
                        Affine(rng.standard_normal((2, 10)))])
    assert unmerged.activations[0].channels is None
    # given by the user: kept, and validated
    assert SlopeRestricted("relu", channels=2).with_size(8).channels == 2
    with pytest.raises(InvalidNetworkError, match="channels"):
        SlopeRestricted("relu", channels=3).with_size(8)


@pytest.mark.parametrize("variant", ["neuron", "channel", "layer", "chain"])
def test_terms_equal_blocks(variant):
    rng = np.random.default_rng(2)
    act = SlopeRestricted("leaky_relu", alpha=rng.uniform(-0.5, 0.2, 12), beta=rng.uniform(0.3, 2.0, 12),
                          size=12, channels=3)
    qc = constraint_for(act, variant)
    (p,) = qc.params()
    assert p.size == {"neuron": 12, "chain": 12, "channel": 3, "layer": 1}[variant]
    vals = {"lambda": rng.uniform(0.1, 2.0, p.size)}
    np.testing.assert_allclose(qc.matrix_from_terms(vals), qc.matrix(vals), rtol=1e-13, atol=1e-13)
    if variant == "channel":  # T = blkdiag(λ_c I_4)
        np.testing.assert_array_equal(np.diag(qc.metric(vals)), np.repeat(vals["lambda"], 4))


def test_groupsort_channel_is_neuron():
    act = lipsdp.GroupSort(2, size=8)
    assert [p.size for p in constraint_for(act, "channel").params()] == [p.size for p in constraint_for(act, "neuron").params()]


def test_channel_certifies_between_neuron_and_layer():
    net = _cnn()
    low = float(lipsdp.lower_bound(net))
    certs = {m: lipsdp.certify(net, method=m, solver="native", lower=False) for m in ("neuron", "channel", "layer")}
    for m, cert in certs.items():
        assert cert.verified, m
        assert cert.bound >= low, m
    # sub-families (checked optima: 1e-6 relative room for the solvers' stopping tolerance)
    assert certs["neuron"].bound <= certs["channel"].bound * (1 + 1e-6)
    assert certs["channel"].bound <= certs["layer"].bound * (1 + 1e-6)
    assert certs["channel"].bound < certs["neuron"].naive_bound


def test_channel_equals_neuron_on_a_dense_mlp():
    rng = np.random.default_rng(4)
    net = Network([Affine(rng.standard_normal((12, 6))), SlopeRestricted("tanh"),
                   Affine(rng.standard_normal((10, 12)) / 3), SlopeRestricted("relu"),
                   Affine(rng.standard_normal((3, 10)))])
    qcs = [constraint_for(a, "channel") for a in net.activations]
    assert [q.params()[0].size for q in qcs] == [12, 10]
    ch = lipsdp.certify(net, method="channel", lower=False)
    ne = lipsdp.certify(net, method="neuron", lower=False)
    assert ch.verified and ne.verified
    assert ch.bound == pytest.approx(ne.bound, rel=1e-7)
