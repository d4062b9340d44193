"""Small CNNs with every layer kind of issue 14 certify, checked, on the dense path; the max-pool
QC (models/export/pooling.py: MaxPool = S · GroupSort_k · D) is sound and tight where it must be."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the exporter needs torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils import parametrizations as P  # noqa: E402

import lipsdp  # noqa: E402
from lipsdp import ir  # noqa: E402
from lipsdp.models import from_torch  # noqa: E402

from .glipsdp_nets import ConvBlock  # noqa: E402


def dense(net: ir.Network) -> ir.Network:
    """The same network with every operator densified: the existing dense certification path."""

    def layer(x):
        if isinstance(x, ir.Affine):
            return ir.Affine(x.weight, x.bias, x.name)
        if isinstance(x, ir.Residual):
            return ir.Residual(tuple(layer(y) for y in x.body), x.name)
        return x

    return ir.Network([layer(x) for x in net.layers], net.name)


def certify(model, shape, **kwargs):
    return lipsdp.certify(dense(from_torch(model, shape)), **kwargs)


class Scaled(nn.Module):
    """``self.scale * self.conv(x)`` with a float attribute (spectrally normalised conv nets)."""

    def __init__(self):
        super().__init__()
        self.conv = P.spectral_norm(nn.Conv2d(1, 2, 3, padding=1))
        self.scale = 0.8

    def forward(self, x):
        return self.scale * self.conv(x)


class PadConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return F.relu(self.conv(F.pad(x, (1, 1, 1, 1), value=0.5)))


CNNS = {
    "conv-stride-padding": lambda: (nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                                                  nn.Linear(8, 2)), (1, 4, 4)),
    "conv-reflect-avgpool": lambda: (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                                                   nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 2)), (1, 4, 4)),
    "pad-conv-global-avg": lambda: (nn.Sequential(PadConv(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)),
                                    (1, 4, 4)),
    "maxpool": lambda: (nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                      nn.Linear(8, 2)), (1, 4, 4)),
    "adaptive-maxpool": lambda: (nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.AdaptiveMaxPool2d(2), nn.Flatten(),
                                               nn.Linear(8, 2)), (1, 4, 4)),
    "conv1d-maxpool1d": lambda: (nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, dilation=1), nn.ReLU(), nn.MaxPool1d(3, 2, 1),
                                               nn.Flatten(), nn.Linear(6, 2)), (1, 6)),
    "residual-conv-block": lambda: (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), ConvBlock(2), nn.Flatten(),
                                                  nn.Linear(8, 2)), (1, 4, 4)),
    "batchnorm-spectral-scaled": lambda: (nn.Sequential(Scaled(), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                                                        nn.Linear(32, 2)), (1, 4, 4)),
    "conv-transpose": lambda: (nn.Sequential(nn.ConvTranspose2d(1, 1, 2, stride=2), nn.ReLU(), nn.Flatten(),
                                             nn.Linear(16, 2)), (1, 2, 2)),
}


def _model(kind, seed=0):
    torch.manual_seed(seed)
    model, shape = CNNS[kind]()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model.double().eval(), shape


@pytest.mark.parametrize("kind", sorted(CNNS))
def test_small_cnn_certifies_checked(kind):
    model, shape = _model(kind)
    cert = certify(model, shape)
    assert cert.verified, cert.message
    lower = lipsdp.lower_bound(model, input_shape=shape).value  # from the torch module's own forward
    assert cert.bound >= lower
    assert cert.bound <= cert.naive_bound * (1 + 1e-6)


# --- the max-pool QC -----------------------------------------------------------------------


@pytest.mark.parametrize("seed,pool", [(0, nn.MaxPool2d(2)), (1, nn.MaxPool2d(3, stride=1, padding=1)),
                                       (2, nn.MaxPool2d(2, stride=1)), (3, nn.MaxPool2d(3, 2, 1, ceil_mode=True))])
def test_maxpool_bound_never_below_sampled_lower_bound(seed, pool):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), pool).double().eval()
    cert = certify(model, (1, 4, 4), lower=False)
    assert cert.verified
    assert cert.bound >= lipsdp.lower_bound(model, input_shape=(1, 4, 4), seed=seed).value


def test_single_2x2_maxpool_certifies_one():
    """Non-overlapping windows: D is a permutation, the true constant is 1 (math, pooling.py)."""
    net = from_torch(nn.MaxPool2d(2), (2, 4, 4))
    assert [type(layer).__name__ for layer in net.layers] == ["Affine", "GroupSort", "Affine"]
    D = net.layers[0].weight
    np.testing.assert_array_equal(D @ D.T, np.eye(32))
    cert = lipsdp.certify(dense(net))
    assert cert.verified
    assert cert.lower_bound == pytest.approx(1.0, abs=1e-12)
    assert 1.0 <= cert.bound <= 1.0 + 1e-3  # 1e-3: the solver's tolerance plus the check's inflation


def test_maxpool_qc_tighter_than_an_opaque_pool():
    """Treating the pool as an opaque 1-Lipschitz map gives bound(before) · bound(after); the QC
    couples the pool with its neighbours and must do strictly better on this net."""
    torch.manual_seed(0)
    before = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    after = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    model = nn.Sequential(*before, nn.MaxPool2d(2), *after).double().eval()
    full = certify(model, (1, 4, 4), lower=False)
    first = certify(before.double(), (1, 4, 4), lower=False)
    second = np.linalg.norm(after[1].weight.detach().numpy(), 2)
    assert full.verified and first.verified
    assert full.bound < 0.99 * first.bound * second


def test_maxpool_layers_are_the_pool():
    """Affine(D) → GroupSort(k) → Affine(S) equals max pooling on random inputs, ragged windows
    (padding, ceil_mode) included."""
    pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
    net = from_torch(pool, (2, 5, 6))
    x = torch.randn(9, 2, 5, 6, dtype=torch.float64)
    np.testing.assert_array_equal(net.forward(x.reshape(9, -1).numpy()), pool(x).reshape(9, -1).numpy())
    assert isinstance(net.layers[1], ir.GroupSort) and net.layers[1].group_size == 9


@pytest.mark.parametrize("kind", ["conv-stride-padding", "residual-conv-block",
                                  "maxpool"])
def test_operator_form_certifies_like_the_dense_form(kind):
    """The exported operators (Conv / Sparse) give the same checked bound as their dense copies."""
    model, shape = _model(kind)
    net = from_torch(model, shape)
    cert, ref = lipsdp.certify(net, lower=False), lipsdp.certify(dense(net), lower=False)
    assert cert.verified and ref.verified
    assert cert.bound == pytest.approx(ref.bound, rel=1e-6)
