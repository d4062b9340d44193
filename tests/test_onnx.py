"""lipsdp.io_onnx: ONNX graphs read straight into the IR.

Reference: the torch module the ONNX file was exported from (torch.onnx.export, TorchScript
exporter, dynamo=False: the dynamo exporter needs onnxscript).  Two checks per network:
- the forward pass of the IR equals onnx.reference's evaluation of the graph (float32 graph,
  float64 IR: agreement to 1e-5 relative);
- the certified bound equals the bound certified from the torch module itself (same solver) to
  1e-6 relative: the two routes build the same float64 matrices.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed")
onnx = pytest.importorskip("onnx", reason="lipsdp[onnx] extra (onnx) not installed")

import lipsdp  # noqa: E402
from lipsdp.errors import UnsupportedLayerError  # noqa: E402
from lipsdp.io_onnx import load_onnx  # noqa: E402

nn = torch.nn


def export(module, shape, path, fold=True):
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn((1,) + tuple(shape)),), str(path), dynamo=False,
                          do_constant_folding=fold)
    return path


def reference_forward(path, x):
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(str(path))
    return ref.run(None, {ref.input_names[0]: x.astype(np.float32)})[0]


def assert_same_function(net, path, shape, seed=0):
    x = np.random.default_rng(seed).standard_normal((6,) + tuple(shape))
    want = reference_forward(path, x).reshape(6, -1)
    got = net.forward(x.reshape(6, -1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def small_cnn():
    torch.manual_seed(1)
    return SmallCNN()


@pytest.mark.parametrize("make, shape", [(mlp, (6,)), (small_cnn, (1, 5, 5))], ids=["mlp", "cnn"])
def test_onnx_bound_equals_torch_bound(tmp_path, make, shape):
    module = make()
    path = export(module, shape, tmp_path / "model.onnx")
    net = lipsdp.load(path)
    assert_same_function(net, path, shape)
    from_onnx = lipsdp.certify(str(path), solver="clarabel", lower=False)
    from_torch = lipsdp.certify(module, input_shape=shape, solver="clarabel", lower=False)
    assert from_onnx.verified and from_torch.verified
    assert from_onnx.bound == pytest.approx(from_torch.bound, rel=1e-6)


class Everything(nn.Module):
    """Input normalisation, Conv with groups/stride/padding, unfused BatchNorm, LeakyReLU, Pad,
    AvgPool, Conv with dilation, Sigmoid, GlobalAveragePool, MatMul+Add (Linear on 3-D), Tanh."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 2, dilation=2)
        self.pool = nn.AvgPool2d(2, padding=1, count_include_pad=False)
        self.fc3 = nn.Linear(3, 5)
        self.out = nn.Linear(2 * 5, 2)

    def forward(self, x):
        x = (x - 0.25) / 0.5
        x = nn.functional.leaky_relu(self.bn(self.c1(x)), 0.1)
        x = nn.functional.pad(x, (1, 0, 0, 1))
        x = torch.sigmoid(self.c2(self.pool(x)))
        g = nn.functional.adaptive_avg_pool2d(x, 1).view(x.size(0), 2, 3)
        x = torch.tanh(self.fc3(g))
        return self.out(x.reshape(x.size(0), -1))


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
def test_onnx_ops_compute_the_same_function(tmp_path, fold):
    torch.manual_seed(2)
    m = Everything()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2.0)
    path = export(m, (2, 9, 9), tmp_path / "all.onnx", fold=fold)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "Pad", "AveragePool", "GlobalAveragePool", "Sub", "Div", "LeakyRelu", "Sigmoid", "Tanh"} <= ops
    assert_same_function(load_onnx(path), path, (2, 9, 9))


def test_unsupported_op_names_the_node(tmp_path):
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(2 * 3 * 3, 2))
    path = export(m, (1, 8, 8), tmp_path / "maxpool.onnx")
    with pytest.raises(UnsupportedLayerError, match=r"maxpool.onnx: 1 ONNX node\(s\).*node '[^']*MaxPool[^']*' \(MaxPool\)"):
        load_onnx(path)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)], ids=["2x2", "3x3-s2-p1"])
def test_onnx_maxpool_is_the_groupsort_lifting(tmp_path, pool):
    """MaxPool (the QC of the export issue) is read too: same function, same checked bound as the
    torch module's export, never below a sampled lower bound."""
    torch.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), pool, nn.Flatten())
    m.append(nn.Linear(int(np.prod(m(torch.zeros(1, 1, 9, 9)).shape[1:])), 2))
    path = export(m.eval(), (1, 9, 9), tmp_path / "pool.onnx")
    net = load_onnx(path)
    assert_same_function(net, path, (1, 9, 9))
    a = lipsdp.certify(net, solver="native")
    b = lipsdp.certify(lipsdp.from_torch(m, (1, 9, 9)), solver="native", lower=False)
    assert a.verified and b.verified and a.bound == pytest.approx(b.bound, rel=1e-6)
    assert a.lower_bound <= a.bound


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(x + torch.relu(self.a(x)))


def test_residual_add_is_refused_with_the_node(tmp_path):
    path = export(Skip(), (4,), tmp_path / "skip.onnx")
    with pytest.raises(UnsupportedLayerError, match=r"\(Add\): combines two tensors"):
        load_onnx(path)


def test_cli_certifies_onnx(tmp_path, capsys):
    import json

    from lipsdp.cli import main

    path = export(mlp(), (6,), tmp_path / "model.onnx")
    assert main(["certify", str(path), "--json", "--no-lower", "--solver", "clarabel"]) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["verified"]
    assert cert["bound"] == pytest.approx(lipsdp.certify(mlp(), input_shape=(6,), solver="clarabel", lower=False).bound,
                                          rel=1e-6)


def _graph(nodes, inits, shape, out_dim, opset=17):
    """A hand-built ONNX model: input 'x' of shape (1, *shape), output 'y'."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1,) + tuple(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.int64 if np.asarray(v).dtype.kind in "iu" else np.float32), k)
         for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_hand_built_graph_ops_match_the_reference(tmp_path):
    """Ops torch.onnx does not emit for the modules above: constant-minus-input, Mul by a
    constant on the left, Gemm with alpha/beta and transB=0, MatMul then Add, Unsqueeze/Squeeze
    with axes as inputs, Elu, constant-valued Pad."""
    from onnx import helper

    rng = np.random.default_rng(3)
    n = helper.make_node
    nodes = [
        n("Sub", ["c", "x"], ["a"]), n("Mul", ["m", "a"], ["b"]),
        n("Gemm", ["b", "B", "C"], ["g"], alpha=0.5, beta=2.0, transB=0),
        n("Elu", ["g"], ["e"], alpha=0.7),
        n("Unsqueeze", ["e", "ax"], ["u"]), n("Pad", ["u", "pads", "pv"], ["p"]),
        n("Squeeze", ["p", "ax"], ["s"]),
        n("MatMul", ["s", "M"], ["mm"]), n("Add", ["mm", "bias"], ["y0"]), n("LeakyRelu", ["y0"], ["l"], alpha=0.2),
        n("Gemm", ["l", "W"], ["y"], transB=1),
    ]
    inits = {"c": rng.standard_normal(4), "m": rng.standard_normal((1, 4)), "B": rng.standard_normal((4, 5)),
             "C": rng.standard_normal(5), "ax": np.array([1]), "pads": np.array([0, 0, 1, 0, 0, 2]),
             "pv": np.array(0.3), "M": rng.standard_normal((8, 3)), "bias": rng.standard_normal(3),
             "W": rng.standard_normal((2, 3))}
    onnx.save(_graph(nodes, inits, (4,), 2), str(tmp_path / "hand.onnx"))
    assert_same_function(load_onnx(tmp_path / "hand.onnx"), tmp_path / "hand.onnx", (4,))


def test_graph_errors_are_one_clear_message(tmp_path):
    from onnx import helper

    n = helper.make_node
    model = _graph([n("Relu", ["x"], ["r"]), n("Softmax", ["r"], ["s"]), n("Gemm", ["s", "W"], ["y"], transB=1)],
                   {"W": np.ones((2, 3))}, (3,), 2)
    onnx.save(model, str(tmp_path / "soft.onnx"))
    with pytest.raises(UnsupportedLayerError, match=r"1 ONNX node\(s\) cannot be read: node 1 \(Softmax\): op Softmax"):
        load_onnx(tmp_path / "soft.onnx")
    model = _graph([n("Relu", ["x"], ["r"]), n("Gemm", ["r", "nothere"], ["y"], transB=1)], {}, (3,), 2)
    onnx.save(model, str(tmp_path / "dangling.onnx"))
    with pytest.raises(UnsupportedLayerError, match=r"\['nothere'\] are produced by no earlier node"):
        load_onnx(tmp_path / "dangling.onnx")
