"""from_torch on every layer kind of issue 14: the exported IR reproduces ``forward`` in float64 to
1e-10 relative on random inputs (the exporter is exact; float64 round-off is ~1e-16)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the exporter needs torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils import parametrizations as P  # noqa: E402

from lipsdp import ir  # noqa: E402
from lipsdp.errors import InvalidNetworkError, UnsupportedLayerError  # noqa: E402
from lipsdp.models import from_torch  # noqa: E402

from .glipsdp_nets import ConvBlock, SameConv2d  # noqa: E402

RTOL = 1e-10


def check(model, input_shape, batch=5, seed=0, scale=2.0, given_shape=None):
    """Export (with ``given_shape`` if set), compare with model(x) in float64; return the net."""
    torch.manual_seed(seed)
    model = model.double().eval()
    net = from_torch(model, given_shape or input_shape)
    x = scale * torch.randn((batch,) + tuple(input_shape), dtype=torch.float64)
    with torch.no_grad():
        want = model(x).reshape(batch, -1).numpy()
    got = net.forward(x.reshape(batch, -1).numpy())
    assert got.shape == want.shape
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)
    assert err <= RTOL, err
    return net


class Apply(nn.Module):
    """forward = fn(x): a functional call written in forward."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


# --- convolutions ---------------------------------------------------------------------------

CONV2D = [
    dict(stride=2, padding=1),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    dict(padding="same", dilation=2),
    dict(padding="valid", bias=False),
    dict(groups=2, padding=1, stride=2),
    dict(padding=2, padding_mode="reflect"),
    dict(padding=(1, 2), padding_mode="replicate", stride=2),
    dict(padding=1, padding_mode="circular", groups=2),
]


@pytest.mark.parametrize("kw", CONV2D, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_conv2d(kw):
    check(nn.Sequential(nn.Conv2d(2, 4, 3, **kw), nn.ReLU(), nn.Conv2d(4, 2, 2)), (2, 7, 6))


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(dilation=2, padding="same"), dict(groups=2),
                                dict(padding=2, padding_mode="reflect"), dict(padding=1, padding_mode="circular")])
def test_conv1d(kw):
    check(nn.Conv1d(2, 4, 3, **kw), (2, 9))


@pytest.mark.parametrize("cls,shape", [(nn.ConvTranspose1d, (2, 5)), (nn.ConvTranspose2d, (2, 4, 3))])
@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1), dict(groups=2, dilation=2)])
def test_conv_transpose(cls, shape, kw):
    check(nn.Sequential(cls(2, 4, 3, **kw), nn.Tanh()), shape)


def test_functional_conv_and_linear_with_parameters():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 2, 3, 3))
            self.b = nn.Parameter(torch.randn(3))
            self.fc = nn.Parameter(torch.randn(4, 3 * 2 * 2))

        def forward(self, x):
            x = F.relu(F.conv2d(x, self.w, self.b, stride=2))
            return F.linear(x.flatten(1), self.fc)

    check(Net(), (2, 5, 5))


def test_tensorflow_same_padding_from_the_input_shape():
    check(nn.Sequential(SameConv2d(1, 3, 4, 2), nn.ReLU(), SameConv2d(3, 2, 3)), (1, 9, 8))


# --- padding --------------------------------------------------------------------------------

PADS = [nn.ZeroPad2d((1, 2, 0, 3)), nn.ConstantPad2d(1, 0.75), nn.ConstantPad1d((2, 0), -1.5), nn.ReflectionPad2d(2),
        nn.ReplicationPad2d((1, 0, 2, 1)), nn.CircularPad2d(1), nn.ReflectionPad1d(1), nn.ZeroPad1d(2)]


@pytest.mark.parametrize("pad", PADS, ids=lambda p: type(p).__name__)
def test_pad_modules(pad):
    shape = (2, 6) if "1d" in type(pad).__name__ else (2, 4, 5)
    net = check(nn.Sequential(pad, nn.ReLU(), nn.Flatten(), nn.Linear(2 * int(np.prod(pad(torch.zeros((1,) + shape)).shape[2:])), 3)), shape)
    if getattr(pad, "value", 0):
        assert net.layers[0].bias is not None  # the padding value is a bias


@pytest.mark.parametrize("mode,value", [("constant", 0.0), ("constant", 2.5), ("reflect", None), ("replicate", None),
                                        ("circular", None)])
def test_functional_pad(mode, value):
    kwargs = {"value": value} if value is not None else {}
    check(Apply(lambda x: F.relu(F.pad(x, (1, 2, 2, 1), mode=mode, **kwargs))), (2, 4, 4))


# --- pooling --------------------------------------------------------------------------------

AVG = [nn.AvgPool2d(2), nn.AvgPool2d(3, stride=2, padding=1), nn.AvgPool2d(3, 2, 1, count_include_pad=False),
       nn.AvgPool2d(2, ceil_mode=True), nn.AvgPool2d(2, divisor_override=3), nn.AvgPool1d(3, 2, 1),
       nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((3, 2)), nn.AdaptiveAvgPool1d(4)]


@pytest.mark.parametrize("pool", AVG, ids=repr)
def test_average_pooling(pool):
    shape = (2, 7) if "1d" in type(pool).__name__ else (2, 7, 5)
    check(nn.Sequential(nn.ReLU(), pool, nn.Flatten()), shape)


MAX = [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, ceil_mode=True),
       nn.MaxPool2d(2, stride=1, dilation=2), nn.MaxPool1d(3, 2, 1), nn.AdaptiveMaxPool2d((3, 2)),
       nn.AdaptiveMaxPool2d(1), nn.AdaptiveMaxPool1d(3)]


@pytest.mark.parametrize("pool", MAX, ids=repr)
def test_max_pooling(pool):
    shape = (2, 7) if "1d" in type(pool).__name__ else (2, 7, 5)
    net = check(nn.Sequential(nn.Conv1d(2, 2, 1) if "1d" in type(pool).__name__ else nn.Conv2d(2, 2, 1), pool,
                              nn.Flatten()), shape)
    assert any(isinstance(layer, ir.GroupSort) for layer in net.layers)


def test_functional_pooling():
    check(Apply(lambda x: F.max_pool2d(F.avg_pool2d(x, 2, 1), 2)), (2, 7, 7))
    check(Apply(lambda x: F.adaptive_max_pool2d(F.adaptive_avg_pool2d(x, 5), 2)), (2, 7, 7))


def test_max_pool_return_indices_is_unsupported():
    with pytest.raises(UnsupportedLayerError, match="return_indices"):
        from_torch(nn.Sequential(nn.Conv2d(1, 1, 1), nn.MaxPool2d(2, return_indices=True)), (1, 4, 4))


# --- reshapes, arithmetic, residuals ---------------------------------------------------------


def test_reshapes_in_pytorch_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 2)
            self.fc = nn.Linear(3 * 3 * 4, 5)

        def forward(self, x):
            x = self.conv(x).view(x.size(0), 3, -1).reshape(len(x), -1)
            x = x.unflatten(1, (3, 12)).flatten(1)
            return self.fc(torch.reshape(torch.relu(x), (x.shape[0], -1)))

    check(Net(), (2, 4, 5))


def test_multiplication_and_division_by_constants():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = 0.37  # a float attribute, e.g. a spectral-normalisation constant
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.register_buffer("gain", torch.rand(3, 1, 1) + 0.5)  # per-channel constant

        def forward(self, x):
            x = self.scale * self.conv(x)
            x = torch.relu(x * self.gain / 1.7)
            x = -x + 2.0 - (x * 3) / self.scale
            return (1.5 - x).sub(0.25).mul(2).div(self.gain)

    check(Net(), (2, 4, 4))


def test_add_constant_tensor_is_a_bias():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.register_buffer("b", torch.randn(3))

        def forward(self, x):
            return torch.add(self.fc(x), self.b, alpha=0.5) + 1

    check(Net(), (3,))


@pytest.mark.parametrize("combine", ["x+f", "f+x", "x-f", "0.5x+2f", "relu(x+f)"])
def test_residual_branches(combine):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = nn.Linear(4, 5), nn.Linear(5, 6), nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, x):
            x = self.a(x)
            f = self.c(torch.tanh(self.b(x)))
            x = {"x+f": lambda: x + f, "f+x": lambda: f + x, "x-f": lambda: x - f,
                 "0.5x+2f": lambda: 0.5 * x + 2 * f, "relu(x+f)": lambda: F.relu(x + f)}[combine]()
            return self.d(x)

    net = check(Net(), (4,))
    assert any(isinstance(layer, ir.Residual) for layer in net.layers)


def test_conv_residual_block_with_activation_after_the_sum():
    """GLipSDP's C-R18 block relu(conv2(relu(conv1(x))) + x): Residual(conv1, relu, conv2) then ReLU."""
    net = check(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), ConvBlock(3), ConvBlock(3), nn.Flatten(),
                              nn.Linear(3 * 5 * 5, 2)), (1, 5, 5))
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Affine", "SlopeRestricted", "Residual", "SlopeRestricted", "Residual", "SlopeRestricted", "Affine"]


def test_two_branch_product_is_unsupported():
    with pytest.raises(UnsupportedLayerError, match="product or quotient"):
        from_torch(Apply(lambda x: x * torch.tanh(x)), (3,))
    with pytest.raises(UnsupportedLayerError, match="c / x"):
        from_torch(Apply(lambda x: 1.0 / x), (3,))


# --- normalisation and parametrised weights -----------------------------------------------


def _randomise_bn(bn):
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def test_batchnorm_folded_after_conv():
    check(nn.Sequential(nn.Conv2d(2, 3, 3), _randomise_bn(nn.BatchNorm2d(3)), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(3, 2), _randomise_bn(nn.BatchNorm1d(2))), (2, 5, 5))


def _trained(model, shape, steps=3):
    """A few training steps, so that parametrisations hold non-trivial state (power-iteration
    vectors), then eval mode."""
    model = model.double().train()
    for _ in range(steps):  # plain gradient steps (torch.optim would import torch._dynamo: seconds)
        model.zero_grad()
        model(torch.randn((4,) + shape, dtype=torch.float64)).square().sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    return model.eval()


PARAMETRISED = {
    "spectral_norm": lambda: nn.Sequential(P.spectral_norm(nn.Conv2d(2, 3, 3)), nn.ReLU(), nn.Flatten(),
                                           P.spectral_norm(nn.Linear(3 * 3 * 3, 2))),
    "weight_norm": lambda: nn.Sequential(P.weight_norm(nn.Conv2d(2, 3, 3)), nn.ReLU(), nn.Flatten(),
                                         P.weight_norm(nn.Linear(3 * 3 * 3, 2))),
    "orthogonal": lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(),
                                        P.orthogonal(nn.Linear(3 * 3 * 3, 27)), nn.Tanh(), nn.Linear(27, 2)),
    "legacy_spectral_norm": lambda: nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(2, 3, 3)), nn.ReLU(), nn.Flatten(),
                                                  nn.utils.spectral_norm(nn.Linear(3 * 3 * 3, 2))),
    "legacy_weight_norm": lambda: nn.Sequential(nn.utils.weight_norm(nn.Conv2d(2, 3, 3)), nn.ReLU(), nn.Flatten(),
                                                nn.Linear(3 * 3 * 3, 2)),
}


@pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", sorted(PARAMETRISED))
def test_parametrised_weights_as_forward_computes_them(kind):
    torch.manual_seed(1)
    check(_trained(PARAMETRISED[kind](), (2, 5, 5)), (2, 5, 5))


def test_spectral_norm_scaled_and_global_pooled():
    """The issue's example: ``self.scale * self.conv(x)`` with a float attribute, then AdaptiveAvgPool2d."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = P.spectral_norm(nn.Conv2d(2, 4, 3, padding=1))
            self.scale = 0.9
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.pool(F.relu(self.scale * self.conv(x))).flatten(1))

    check(_trained(Net(), (2, 6, 6)), (2, 6, 6))


# --- input shapes ---------------------------------------------------------------------------


def test_input_shape_with_batch_dimension():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    net = check(model, (1, 6, 6), given_shape=(1, 1, 6, 6))
    assert net.input_dim == 36
    check(model, (1, 6, 6), given_shape=(32, 1, 6, 6))


def test_wrong_input_shape_names_the_layer():
    with pytest.raises(InvalidNetworkError, match="'0' \\(torch.nn.modules.conv.Conv2d\\).*input_shape"):
        from_torch(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), (1, 6, 6))


def test_convolutions_stay_operators():
    """Convolutions are lipsdp.linop.Conv operators (a zero F.pad before one is absorbed into its
    padding); pooling and padding maps are sparse; nothing is densified."""
    from lipsdp.linop import Conv, Sparse

    model = nn.Sequential(SameConv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten())
    net = check(model, (1, 6, 6))
    assert [type(a.op) for a in net.affines] == [Conv, Conv, Sparse, Sparse]
    assert net.affines[0].op.padding == ((1, 1), (1, 1))


def test_batchnorm_and_scale_fold_into_the_convolution():
    from lipsdp.linop import Conv

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn = nn.Conv2d(2, 3, 3, padding=1), _randomise_bn(nn.BatchNorm2d(3))
            self.conv2 = nn.Conv2d(3, 2, 3, bias=False)
            self.scale = 0.6

        def forward(self, x):
            return self.scale * self.conv2(torch.relu(self.bn(self.conv1(x))))

    net = check(Net(), (2, 5, 5))
    assert [type(a.op) for a in net.affines] == [Conv, Conv]
