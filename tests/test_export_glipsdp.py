"""The six GLipSDP reference networks (refdata/GLipSDP, SOURCE.md) written as ordinary PyTorch
(tests/glipsdp_nets.py) export from their state dicts and reproduce their forward passes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the exporter needs torch")

import lipsdp  # noqa: E402
from lipsdp import ir  # noqa: E402
from lipsdp.models import from_torch  # noqa: E402

from .glipsdp_nets import NETWORKS, load  # noqa: E402

@pytest.mark.parametrize("name", list(NETWORKS))
def test_refdata_network_reproduces_forward(name):
    model, shape = load(name)
    model = model.double()
    net = from_torch(model, shape)
    x = torch.rand((6,) + shape, dtype=torch.float64)  # MNIST-like inputs in [0, 1]
    with torch.no_grad():
        want = model(x).numpy()
    got = net.forward(x.reshape(6, -1).numpy())
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()
    assert net.input_dim == 784 and net.output_dim == 10


def test_c_r18_structure():
    """C-R18 = same-padded stem conv, ReLU, MaxPool2d(2) (Affine(D) → GroupSort(4) → Affine(S)),
    8 × [Residual(conv1, ReLU, conv2), ReLU], AvgPool2d(2) + flatten + Linear merged into one Affine.
    Checked on the architecture with 4 × 4 inputs (the same code path, fast)."""
    from .glipsdp_nets import VersatilityCR18

    torch.manual_seed(0)
    model = VersatilityCR18(channels=2, blocks=2)
    model.classifier = torch.nn.Linear(2 * 1 * 1, 10)
    net = from_torch(model.double().eval(), (1, 4, 4))
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Affine", "SlopeRestricted", "Affine", "GroupSort", "Affine", "Residual", "SlopeRestricted",
                     "Residual", "SlopeRestricted", "Affine"]
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(net.forward(x.reshape(4, -1).numpy()), model(x).numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_fc_r18_certifies_the_reference_value():
    """reference-values.md: neuron-wise LipSDP of FC-R18 as defined (post-sum ReLU kept) is 22.006
    (an independent cvxpy + SDPA model); 4 significant digits given after the point → 5e-4."""
    model, shape = load("versatility_FC-R18.pt")
    net = from_torch(model.double(), shape)
    assert sum(isinstance(layer, ir.Residual) for layer in net.layers) == 8
    cert = lipsdp.certify(net)
    assert cert.verified
    assert cert.bound == pytest.approx(22.006, abs=5e-4)


@pytest.mark.parametrize("name,product", [("mnist_2C2F_wd.pth", 10.892), ("mnist_LeNet5_wd.pth", 15.614)])
def test_product_of_norms_matches_the_reference(name, product):
    """reference-values.md (GLipSDP table, 3 decimals; LeNet5's average pools folded into the next
    layer, as the IR merges them): the product of the exported layers' spectral norms."""
    model, shape = load(name)
    net = from_torch(model.double(), shape)
    assert np.prod([a.op.norm2_estimate() for a in net.affines]) == pytest.approx(product, abs=5e-4)


@pytest.mark.slow
def test_2c2f_time_limited_certificate_is_sound():
    """reference-values.md: the neuron-wise LipSDP optimum of mnist_2C2F_wd is 4.27222 (2 304 s); a
    time-limited checked bound can only lie above it (on a loaded machine it may not yet beat the
    product of norms)."""
    model, shape = load("mnist_2C2F_wd.pth")
    cert = lipsdp.certify(from_torch(model.double(), shape), time_limit=100, lower=False)
    assert cert.verified
    assert cert.bound >= 4.27222 - 1e-4
