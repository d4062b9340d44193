"""from_torch: the exported IR reproduces the torch forward pass (float64, atol 1e-8)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the exporter needs torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import lipsdp  # noqa: E402
from lipsdp import ir  # noqa: E402
from lipsdp.errors import InvalidNetworkError, UnsupportedLayerError  # noqa: E402
from lipsdp.models import GroupSort, Householder, ImplicitLayer, MaxMin, Residual, from_torch, register_module  # noqa: E402
from lipsdp.models import export as export_mod  # noqa: E402

ATOL = 1e-8


def _check(model, input_shape=None, batch=7, seed=0, scale=2.0):
    """Export, then compare net.forward with model(x) on random inputs in float64."""
    torch.manual_seed(seed)
    model = model.double().eval()
    net = from_torch(model, input_shape)
    shape = input_shape if input_shape is not None else (net.input_dim,)
    x = scale * torch.randn((batch,) + tuple(shape), dtype=torch.float64)
    with torch.no_grad():
        want = model(x).reshape(batch, -1).numpy()
    got = net.forward(x.reshape(batch, -1).numpy())
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    return net


def _randomise_bn(bn):
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


# --- layer types ---------------------------------------------------------------------------

ACTIVATIONS = [
    nn.ReLU(), nn.LeakyReLU(0.1), nn.Tanh(), nn.Sigmoid(), nn.ELU(0.7), nn.Softplus(beta=2.0, threshold=5.0),
    nn.SiLU(), nn.GELU(), nn.Hardtanh(-0.5, 0.8), nn.ReLU6(),
]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: type(a).__name__)
def test_activation_modules(act):
    net = _check(nn.Sequential(nn.Linear(5, 8), act, nn.Linear(8, 3)))
    assert isinstance(net.layers[1], ir.SlopeRestricted)


def test_single_linear():
    torch.manual_seed(1)
    lin = nn.Linear(4, 3)
    net = _check(lin)
    assert len(net.layers) == 1 and net.layers[0].weight.dtype == np.float64
    np.testing.assert_array_equal(net.layers[0].weight, lin.weight.detach().numpy())


def test_linear_without_bias_and_leaves_training_flags():
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Dropout(0.5), nn.ReLU(), nn.Identity(), nn.Linear(4, 2))
    model.train()
    model[1].eval()
    _check_flags = {m: m.training for m in model.modules()}
    net = from_torch(model)
    assert {m: m.training for m in model.modules()} == _check_flags
    assert net.layers[0].bias is None
    _check(model)


def test_functional_forward():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            x = F.leaky_relu(self.a(x), negative_slope=0.2)
            x = torch.tanh(self.b(x)).relu()
            return self.c(F.dropout(x, 0.3, training=self.training))

    net = _check(Net())
    assert [a.describe() for a in net.activations] == ["leaky_relu", "tanh", "relu"]


@pytest.mark.parametrize("fn, name", [(F.elu, "elu"), (F.softplus, "softplus"), (F.silu, "silu"), (F.gelu, "gelu"),
                                      (F.hardtanh, "hardtanh"), (torch.sigmoid, "sigmoid"), (torch.relu, "relu")])
def test_functional_activations(fn, name):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.b(fn(self.a(x)))

    assert _check(Net()).activations[0].describe() == name


@pytest.mark.parametrize(
    "conv, shape",
    [
        (nn.Conv2d(3, 4, 3), (3, 6, 6)),
        (nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1), (2, 7, 5)),
        (nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2, groups=2), (4, 8, 7)),
        (nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular", bias=False), (2, 5, 5)),
        (nn.Conv2d(2, 3, 3, padding="same", padding_mode="reflect"), (2, 5, 6)),
        (nn.Conv1d(3, 5, 3, stride=2, padding=1), (3, 11)),
        (nn.Conv1d(4, 4, 2, dilation=2, groups=4), (4, 9)),
    ],
)
def test_conv_is_exact_dense_operator(conv, shape):
    _check(nn.Sequential(conv, nn.ReLU(), nn.Flatten()), shape)


def test_cnn_with_batchnorm_flatten_and_view():
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), _randomise_bn(nn.BatchNorm2d(4))
            self.conv2 = nn.Conv2d(4, 4, 3, stride=2)
            self.fc = nn.Linear(4 * 3 * 3, 10)
            self.bn2 = _randomise_bn(nn.BatchNorm1d(10))
            self.out = nn.Linear(10, 2)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = torch.tanh(self.conv2(x))
            x = x.view(x.size(0), -1)
            return self.out(F.elu(self.bn2(self.fc(x))))

    net = _check(CNN(), (1, 7, 7))
    # BatchNorm folded into the neighbouring affine maps: Affine, relu, Affine, tanh, Affine, elu, Affine
    assert [type(layer).__name__ for layer in net.layers].count("Affine") == 4


@pytest.mark.parametrize("flatten", [lambda x: torch.flatten(x, 1), lambda x: x.reshape(x.shape[0], -1),
                                     lambda x: x.flatten(1), lambda x: x.view(-1, 18)])
def test_flatten_calls(flatten):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 2, 2), nn.Linear(18, 3)

        def forward(self, x):
            return self.fc(flatten(torch.relu(self.conv(x))))

    _check(Net(), (2, 4, 4))


def test_flatten_of_batch_dimension_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.flatten(x))  # start_dim=0 merges the batch into the features

    with pytest.raises(UnsupportedLayerError, match="batch dimension"):
        from_torch(Net(), (4,))


def test_batchnorm_folding():
    model = nn.Sequential(nn.Linear(4, 6), _randomise_bn(nn.BatchNorm1d(6)), nn.ReLU(), nn.Linear(6, 2),
                          _randomise_bn(nn.BatchNorm1d(2)))
    net = _check(model)
    assert len(net.layers) == 3  # BatchNorm merged into both affine maps
    # the running statistics are used even when the model is in training mode
    model.train()
    _check_train = from_torch(model)
    np.testing.assert_allclose(_check_train.layers[0].weight, net.layers[0].weight)
    assert model.training


def test_batchnorm_first_and_last_dims():
    _check(nn.Sequential(_randomise_bn(nn.BatchNorm1d(3)), nn.Linear(3, 2)))
    _check(nn.Sequential(nn.Conv1d(2, 3, 2), _randomise_bn(nn.BatchNorm1d(3)), nn.Flatten()), (2, 5))


def test_input_shape_needed_for_conv():
    with pytest.raises(InvalidNetworkError, match="input_shape"):
        from_torch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))


def test_shape_mismatch_is_reported_with_the_layer():
    with pytest.raises(InvalidNetworkError, match="'1'"):
        from_torch(nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)))


def test_model_ending_in_activation():
    net = _check(nn.Sequential(nn.Linear(3, 4), nn.Tanh()))
    assert isinstance(net.layers[-1], ir.Affine)


# --- residual ------------------------------------------------------------------------------


def test_residual_wrapper():
    body = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 6))
    net = _check(nn.Sequential(nn.Linear(4, 6), Residual(body), Residual(nn.Sequential(nn.Linear(6, 6), nn.Tanh())),
                               nn.Linear(6, 2)))
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Affine", "Residual", "Residual", "Affine"]
    assert len(net.layers[1].body) == 3 and len(net.layers[2].body) == 2


def test_residual_plain_forward_with_batchnorm_in_body():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(5, 7), _randomise_bn(nn.BatchNorm1d(7)), nn.ReLU(), nn.Linear(7, 5))

        def forward(self, x):
            return x + self.f(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.block, self.out = nn.Linear(3, 5), Block(), nn.Linear(5, 2)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.block(h))

    net = _check(Net())
    assert isinstance(net.layers[1], ir.Residual) and not net.is_feedforward


def test_residual_conv_body():
    body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Residual(body), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    net = _check(model, (1, 6, 6))
    assert isinstance(net.layers[1], ir.Residual)


def test_residual_of_activation_only_and_linear_only():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.lin, self.b = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            x = self.a(x)
            x = x + torch.relu(x)  # body starts with the activation: an identity affine is inserted
            x = x + self.lin(x)  # affine body: merged to (I + W) x + b
            return self.b(x)

    _check(Net())


def test_two_branch_sums():
    class Affines(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x) + self.b(x)  # both branches affine: one affine map

    class TwoNonlinear(Affines):
        def forward(self, x):
            return torch.relu(self.a(x)) + torch.relu(self.b(x))

    _check(Affines())
    with pytest.raises(UnsupportedLayerError, match="not x \\+ f\\(x\\)"):
        from_torch(TwoNonlinear())


# --- errors ----------------------------------------------------------------------------------


class _Sorter(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=1).values  # no converter: sorting along features is not registered


def test_all_unsupported_layers_listed_in_one_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.features = nn.Sequential(nn.ReLU(), nn.Identity(), nn.Identity(), _Sorter())
            self.norm = nn.LayerNorm(16)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            x = self.features(self.conv(x))
            x = torch.softmax(self.norm(x.view(x.size(0), -1)), dim=1)  # shape plumbing after an unsupported op
            return self.fc(x)

    with pytest.raises(UnsupportedLayerError) as err:
        from_torch(Net(), (1, 4, 6))
    msg = str(err.value)
    lines = msg.splitlines()
    assert lines[0] == "3 unsupported operation(s) in Net:", msg
    # each op: its qualified submodule name and the source line that calls it
    assert "torch.sort in 'features.3' (_Sorter) at test_export.py:" in lines[1]
    assert "`return torch.sort(x, dim=1).values" in lines[1]
    assert "'norm' (torch.nn.modules.normalization.LayerNorm) at test_export.py:" in lines[2]
    assert "torch.softmax in Net.forward at test_export.py:" in lines[3]
    assert "register_module" in msg


def test_gelu_tanh_unsupported():
    with pytest.raises(UnsupportedLayerError, match="approximate='tanh'"):
        from_torch(nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh"), nn.Linear(2, 1)))


def test_parameter_used_directly_is_a_constant():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 3))
            self.register_buffer("shift", torch.randn(2))
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return F.linear(torch.relu(self.fc(x)), self.w) + self.shift

    _check(Net())


def test_parameter_in_an_unsupported_call_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 3))
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.matmul(self.fc(x), self.w.t())

    with pytest.raises(UnsupportedLayerError, match="torch.matmul in Net.forward"):
        from_torch(Net())


def test_untraceable_forward_gives_clear_error():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x)
            return x

    with pytest.raises(UnsupportedLayerError, match="cannot follow the forward pass") as err:
        from_torch(Dynamic())
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_empty_model():
    with pytest.raises(InvalidNetworkError, match="empty"):
        from_torch(nn.Sequential(), (3,))
    with pytest.raises(InvalidNetworkError, match="no affine"):
        from_torch(nn.Sequential(nn.Flatten(), nn.Identity()), (3,))


def test_not_a_module():
    with pytest.raises(UnsupportedLayerError, match="expected a torch.nn.Module"):
        from_torch([nn.Linear(2, 2)])


def test_implicit_layer_points_to_implicit_to_ir():
    with pytest.raises(UnsupportedLayerError, match="implicit_to_ir"):
        from_torch(nn.Sequential(nn.Linear(3, 3), ImplicitLayer(3, 4, 2)))


# --- registry ----------------------------------------------------------------------------------


def test_register_custom_module():
    class Scale(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.s = s

        def forward(self, x):
            if self.s > 0 and x.sum() > -1e300:  # control flow on values: would not trace if followed
                return self.s * x
            return x

    model = nn.Sequential(nn.Linear(3, 4), Scale(3.0), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError):
        from_torch(model)
    register_module(Scale, lambda m, shape: ([ir.Affine(m.s * np.eye(int(np.prod(shape))))], shape))
    try:
        _check(model)
    finally:
        export_mod._MODULE_CONVERTERS.pop(Scale)


def test_register_rejects_non_module():
    with pytest.raises(UnsupportedLayerError, match="nn.Module subclass"):
        register_module(int, lambda m, s: ([], s))


def test_lazy_entry_point_and_supported_list():
    assert lipsdp.from_torch is from_torch
    names = export_mod.supported_modules()
    assert "torch.nn.modules.linear.Linear" in names and "lipsdp.models.modules.Householder" in names


# --- lipsdp.models activations --------------------------------------------------------------


@pytest.mark.parametrize("act, kind", [(MaxMin(), "maxmin"), (GroupSort(3), "groupsort3"), (GroupSort(2), "maxmin")])
def test_groupsort_modules_export(act, kind):
    net = _check(nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 2)))
    assert isinstance(net.layers[1], ir.GroupSort) and net.layers[1].describe() == kind


def test_householder_export():
    torch.manual_seed(3)
    h = Householder(vectors=torch.randn(3, 2))
    net = _check(nn.Sequential(nn.Linear(4, 6), h, nn.Linear(6, 2)))
    act = net.layers[1]
    assert isinstance(act, ir.Householder)
    np.testing.assert_allclose(act.vectors, h.unit_vectors().detach().numpy(), atol=1e-15)


@pytest.mark.parametrize("act", [MaxMin(), GroupSort(3), Householder(3, n_groups=2)], ids=["maxmin", "gs3", "hh3"])
def test_grouping_permutation_on_feature_maps(act):
    if isinstance(act, Householder):
        with torch.no_grad():
            act.vectors.normal_()
    model = nn.Sequential(nn.Conv2d(2, 6, 2), act, nn.Conv2d(6, 2, 2), nn.Flatten())
    net = _check(model, (2, 4, 5))
    assert isinstance(net.layers[1], (ir.GroupSort, ir.Householder))
    assert net.layers[1].size == 6 * 3 * 4


# --- deel-torchlip ---------------------------------------------------------------------------


@pytest.fixture
def torchlip():
    return pytest.importorskip("deel.torchlip", reason="deel-torchlip is not installed (pip install deel-torchlip --no-deps)")


def test_deel_groupsort_family(torchlip):
    for act in (torchlip.GroupSort2(), torchlip.GroupSort(3), torchlip.FullSort(), torchlip.GroupSort(2, k_coef_lip=2.0)):
        net = _check(nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 2)))
        assert isinstance(net.layers[1], ir.GroupSort)
    net = _check(nn.Sequential(nn.Linear(4, 6), torchlip.FullSort(), nn.Linear(6, 2)))
    assert net.layers[1].group_size == 6


def test_deel_groupsort_on_feature_maps(torchlip):
    _check(nn.Sequential(nn.Conv2d(1, 4, 2), torchlip.GroupSort2(), nn.Flatten()), (1, 3, 4))


@pytest.mark.parametrize("shape, first", [((5,), nn.Linear(5, 4)), ((1, 4, 3), nn.Conv2d(1, 4, 2))])
def test_deel_maxmin_doubles_width(torchlip, shape, first):
    net = _check(nn.Sequential(first, torchlip.MaxMin(), nn.Flatten()), shape)
    assert net.output_dim == 2 * first(torch.zeros((1,) + shape, dtype=torch.float64)).numel()
    assert net.activations[0].describe() == "relu"


def test_deel_maxmin_coefficient(torchlip):
    _check(nn.Sequential(nn.Linear(3, 4), torchlip.MaxMin(k_coef_lip=0.5), nn.Linear(8, 2)))


@pytest.mark.parametrize("shape, first", [((5,), nn.Linear(5, 6)), ((2, 4, 3), nn.Conv2d(2, 6, 2))])
def test_deel_householder(torchlip, shape, first):
    torch.manual_seed(0)
    hh = torchlip.HouseHolder(6, theta_initializer="normal")
    net = _check(nn.Sequential(first, hh, nn.Flatten()), shape)
    assert isinstance(net.layers[1], ir.Householder)


def test_deel_lipschitz_layers_use_effective_weights(torchlip):
    torch.manual_seed(0)
    model = nn.Sequential(
        torchlip.SpectralConv2d(1, 4, 3, padding=1), torchlip.GroupSort2(),
        torchlip.FrobeniusConv2d(4, 2, 3), torchlip.FullSort(), nn.Flatten(),
        torchlip.SpectralLinear(2 * 3 * 3, 8, k_coef_lip=2.0), torchlip.HouseHolder(8),
        torchlip.FrobeniusLinear(8, 2),
    )
    net = _check(model, (1, 5, 5))
    # the spectral layer is normalised: the exported weight is not the raw parameter
    sl = model[5]
    raw = sl.parametrizations.weight.original.detach().numpy()
    assert not np.allclose(sl.weight.detach().numpy(), raw)
    assert abs(np.linalg.norm(sl.weight.detach().numpy(), 2) - 2.0) < 1e-3


def test_deel_symmetric_padding(torchlip):
    conv = torchlip.SpectralConv2d(2, 2, 3, padding=2, padding_mode="symmetric")
    _check(nn.Sequential(conv, nn.ReLU(), nn.Flatten()), (2, 5, 5))


def test_deel_sequential(torchlip):
    model = torchlip.Sequential(torchlip.SpectralLinear(4, 6), torchlip.GroupSort2(), torchlip.SpectralLinear(6, 2),
                                k_coef_lip=2.0)
    _check(model)


def test_unsupported_module_deep_in_a_sequential_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU())
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.features(x))

    with pytest.raises(UnsupportedLayerError) as err:
        from_torch(Net())
    line = str(err.value).splitlines()[1]
    assert line.startswith("  - 'features.3' (torch.nn.modules.normalization.LayerNorm) at test_export.py:")
    assert "`return self.head(self.features(x))`: no converter registered for it" in line


def test_inplace_operation_misread_by_the_graph_is_caught():
    """fx records ``y.mul_(2)`` as a node whose result is unused, so the graph alone would export the
    network without the multiplication; the self-check against forward's real output refuses it."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            y = torch.relu(self.a(x))
            y.mul_(2.0)
            return self.b(y)

    with pytest.raises(InvalidNetworkError, match="does not reproduce Net.forward"):
        from_torch(Net())
