"""lipsdp.models modules: same maths as the IR activations, usable in training."""

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="lipsdp.models needs torch")
from torch import nn  # noqa: E402

import lipsdp.models as models  # noqa: E402
from lipsdp import ir  # noqa: E402
from lipsdp.errors import InvalidNetworkError, UnsupportedLayerError  # noqa: E402
from lipsdp.models import GroupSort, Householder, ImplicitLayer, ImplicitSpec, MaxMin, Residual, implicit_to_ir  # noqa: E402


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_all_names_exist():
    for name in models.__all__:
        assert hasattr(models, name), name


def test_maxmin_adjacent_pairs_descending():
    x = torch.tensor([[1.0, 3.0, 5.0, -2.0]])
    assert MaxMin()(x).tolist() == [[3.0, 1.0, 5.0, -2.0]]


@pytest.mark.parametrize("module, op", [(MaxMin(), ir.MaxMin()), (GroupSort(2), ir.GroupSort(2)),
                                        (GroupSort(3), ir.GroupSort(3)), (GroupSort(6), ir.GroupSort(6))])
def test_groupsort_matches_ir(module, op):
    x = _x(10, 12)
    np.testing.assert_array_equal(module(x).numpy(), op.with_size(12).forward(x.numpy()))


def test_householder_matches_ir():
    v = _x(4, 3, seed=1)
    h = Householder(vectors=v).double()  # parameters are stored in the default dtype, like nn.Linear
    x = _x(20, 12, seed=2)
    want = ir.Householder(h.vectors.detach().numpy()).with_size(12).forward(x.numpy())
    np.testing.assert_allclose(h.double()(x).detach().numpy(), want, atol=1e-12)


def test_householder_shared_vector_and_default():
    h = Householder(2)  # default v = (1, -1)/√2, shared by all groups
    x = _x(9, 8)
    np.testing.assert_allclose(h.double()(x).detach().numpy(), MaxMin()(x).numpy(), atol=1e-12)


def test_householder_with_v_1_minus_1_is_maxmin():
    h = Householder(vectors=torch.tensor([1.0, -1.0]) / math.sqrt(2), learnable=False).double()
    x = _x(50, 10)
    np.testing.assert_allclose(h(x).numpy(), MaxMin()(x).numpy(), atol=1e-12)
    assert "vectors" in dict(h.named_buffers())


def test_modules_act_on_channels_of_feature_maps():
    x = _x(3, 4, 5, 2)
    flat = MaxMin()(x.permute(0, 2, 3, 1).reshape(-1, 4)).reshape(3, 5, 2, 4).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(MaxMin()(x).numpy(), flat.numpy())
    h = Householder(vectors=_x(2, 2, seed=3)).double()
    flat = h(x.permute(0, 2, 3, 1).reshape(-1, 4)).reshape(3, 5, 2, 4).permute(0, 3, 1, 2)
    np.testing.assert_allclose(h(x).detach().numpy(), flat.detach().numpy(), atol=1e-12)


def test_householder_is_one_lipschitz_and_preserves_projection():
    h = Householder(vectors=_x(3, 2, seed=4)).double()
    x, y = _x(100, 6, seed=5), _x(100, 6, seed=6)
    with torch.no_grad():
        fx, fy = h(x), h(y)
    assert torch.all(torch.linalg.vector_norm(fx - fy, dim=1) <= torch.linalg.vector_norm(x - y, dim=1) + 1e-12)
    v = h.unit_vectors().detach()
    proj = lambda z: z.reshape(100, 3, 2) - (z.reshape(100, 3, 2) * v).sum(-1, keepdim=True) * v  # noqa: E731
    np.testing.assert_allclose(proj(fx).numpy(), proj(x).numpy(), atol=1e-12)


def test_invalid_configurations():
    with pytest.raises(InvalidNetworkError, match="group_size"):
        GroupSort(1)
    with pytest.raises(InvalidNetworkError, match="cannot be split"):
        GroupSort(3)(torch.zeros(2, 4))
    with pytest.raises(InvalidNetworkError, match="zero"):
        Householder(vectors=[[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(InvalidNetworkError, match="3 vectors for 2 groups"):
        Householder(vectors=_x(3, 2))(torch.zeros(1, 4, dtype=torch.float64))
    with pytest.raises(UnsupportedLayerError, match="activation must be"):
        ImplicitLayer(2, 4, 1, activation=nn.Tanh())


@pytest.mark.parametrize("module", [MaxMin(), GroupSort(3), Householder(vectors=torch.randn(2, 3)),
                                    Residual(nn.Sequential(nn.Linear(6, 6), nn.ReLU()))],
                         ids=["maxmin", "groupsort", "householder", "residual"])
def test_gradients_flow(module):
    lin = nn.Linear(4, 6)
    x = torch.randn(5, 4)
    module(lin(x)).pow(2).sum().backward()
    assert lin.weight.grad is not None and torch.any(lin.weight.grad != 0)
    for p in module.parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad))
    if isinstance(module, Householder):
        assert torch.any(module.vectors.grad != 0)


def test_residual_forward():
    body = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(4, 3)
    torch.testing.assert_close(Residual(body)(x), x + body(x))


# --- implicit layer ------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [MaxMin(), GroupSort(4), nn.ReLU()], ids=["maxmin", "gs4", "relu"])
def test_implicit_fixed_point_satisfies_its_equation(activation):
    torch.manual_seed(0)
    layer = ImplicitLayer(3, 8, 2, activation=activation, tol=1e-13).double()
    with torch.no_grad():
        layer.b.normal_()
    x = _x(6, 3)
    z = layer.equilibrium(x)
    torch.testing.assert_close(z, layer.step(z, x), atol=1e-11, rtol=0)
    torch.testing.assert_close(layer(x), z @ layer.C.T, atol=1e-11, rtol=0)


def test_implicit_gradient_matches_unrolled_iteration():
    torch.manual_seed(1)
    layer = ImplicitLayer(3, 6, 2, activation=nn.ReLU(), tol=1e-13).double()
    with torch.no_grad():
        layer.b.normal_()
    x = _x(5, 3, seed=3).requires_grad_()
    layer(x).square().sum().backward()
    implicit = [p.grad.clone() for p in (layer.W, layer.U, layer.b, layer.C)] + [x.grad.clone()]
    layer.zero_grad()
    x.grad = None
    z = torch.zeros(5, 6, dtype=torch.float64)
    for _ in range(200):  # plain backprop through the converged iteration
        z = layer.step(z, x)
    (z @ layer.C.T).square().sum().backward()
    unrolled = [p.grad for p in (layer.W, layer.U, layer.b, layer.C)] + [x.grad]
    for a, b in zip(implicit, unrolled):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_implicit_nonconvergence_warns():
    layer = ImplicitLayer(2, 4, 1, activation=nn.ReLU(), max_iter=3)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        layer(torch.randn(2, 2))


def test_implicit_to_ir():
    torch.manual_seed(2)
    layer = ImplicitLayer(3, 6, 2, activation=GroupSort(3), tol=1e-13).double()
    spec = implicit_to_ir(layer)
    assert isinstance(spec, ImplicitSpec)
    assert spec.W.shape == (6, 6) and spec.U.shape == (6, 3) and spec.C.shape == (2, 6) and spec.b.shape == (6,)
    assert all(a.dtype == np.float64 for a in (spec.W, spec.U, spec.C, spec.b))
    assert isinstance(spec.activation, ir.GroupSort) and spec.activation.group_size == 3 and spec.activation.size == 6
    # a numpy fixed-point iteration on the spec reproduces the module
    x = _x(4, 3).numpy()
    z = np.zeros((4, 6))
    for _ in range(300):
        z = spec.activation.forward(z @ spec.W.T + x @ spec.U.T + spec.b)
    with torch.no_grad():
        np.testing.assert_allclose(z @ spec.C.T, layer(torch.from_numpy(x)).numpy(), atol=1e-10)
    relu = implicit_to_ir(ImplicitLayer(2, 4, 1, activation=nn.ReLU())).activation
    assert isinstance(relu, ir.SlopeRestricted) and relu.fn == "relu"
    with pytest.raises(UnsupportedLayerError, match="ImplicitLayer"):
        implicit_to_ir(nn.Linear(2, 2))


def test_training_step_with_exported_modules():
    """A few optimiser steps work and the trained model still exports exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), Householder(2, n_groups=3), nn.Linear(6, 6), MaxMin(), nn.Linear(6, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    model.double()
    net = models.from_torch(model)
    xd = x.double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(net.forward(xd.numpy()), model(xd).detach().numpy(), atol=1e-8)
