"""ℓ∞ and per-logit bounds, lower bounds, the report and batch jobs on CNNs (issue 15, item 5).

Networks: tiny seeded convolutional nets built from :class:`lipsdp.linop.Conv` (Gaussian kernels,
rng seeds stated), and the shipped digits CNN (lipsdp/data/demo_digits_cnn.npz, trained by
lipsdp/models/train_demo_cnn.py).  Every bound is compared with something independent: the exact
ℓ∞ constant of the MILP (lipsdp.milp, HiGHS) on a bias-free net small enough for it, a real
difference quotient recomputed here from two forward passes, or the sub-family orderings
(neuron ≤ channel ≤ layer; one logit ≤ all logits).
"""

import numpy as np
import pytest

import lipsdp
from lipsdp import Affine, GroupSort, Network, Residual, SlopeRestricted
from lipsdp.linop import Conv

REL = 1e-6  # room for the solvers' stopping tolerance between two checked optima


def _tiny_cnn(seed=0, bias=False):
    """conv(1→2, k3, s2, p1) on 1×5×5 → relu → linear(18→3): 18 hidden neurons (small enough for
    the exact ℓ∞ MILP); kernels N(0, 1/9), head N(0, 1/18), rng seed ``seed``."""
    rng = np.random.default_rng(seed)
    conv = Conv(rng.standard_normal((2, 1, 3, 3)) / 3.0, (1, 5, 5), stride=2, padding=1)
    b = rng.standard_normal(18) if bias else None
    return Network([Affine(conv, b), SlopeRestricted("relu"), Affine(rng.standard_normal((3, 18)) / np.sqrt(18))])


def _small_cnn(seed=1):
    """conv(1→2, k3, p1) on 1×5×5 → relu → conv(2→3, k3, s2, p1) → relu → linear(27→4), biases:
    77 hidden neurons; kernels N(0, 1/fan-in), rng seed ``seed``."""
    rng = np.random.default_rng(seed)
    c1 = Conv(rng.standard_normal((2, 1, 3, 3)) / 3.0, (1, 5, 5), padding=1)
    c2 = Conv(rng.standard_normal((3, 2, 3, 3)) / np.sqrt(18), (2, 5, 5), stride=2, padding=1)
    return Network([Affine(c1, rng.standard_normal(50)), SlopeRestricted("relu"),
                    Affine(c2, rng.standard_normal(27)), SlopeRestricted("relu"),
                    Affine(rng.standard_normal((4, 27)) / np.sqrt(27))])


def _quotient(net, lb):
    """The difference quotient of the lower bound's witness, recomputed from two forward passes."""
    x = np.ravel(lb.x)
    d = lb.step * np.ravel(lb.direction)
    dy = net.forward(x + d) - net.forward(x)
    out = lb.output
    if out is not None:
        dy = np.atleast_1d(dy[int(out)]) if np.ndim(out) == 0 else np.atleast_1d(np.asarray(out) @ dy)
    num = np.linalg.norm(dy)
    return num / (np.linalg.norm(d) if lb.norm == "l2" else np.max(np.abs(d)))


def test_linf_one_logit_and_all_logits_above_the_exact_milp_value():
    from lipsdp.milp import exact_lipschitz

    net = _tiny_cnn()
    exact = [exact_lipschitz(net, "linf", output=k, time_limit=20) for k in range(3)]
    assert all(r.optimal for r in exact)
    per = lipsdp.certify(net, norm="linf", solver="native", lower=False, progress=False)
    assert per.verified and len(per.per_output) == 3
    assert per.bound == pytest.approx(max(per.per_output), rel=1e-12)
    assert f"{per.bound:.6g}" in per._repr_html_() and per.to_dict()["per_output"] == per.per_output
    for k, r in enumerate(exact):
        one = lipsdp.certify(net, norm="linf", output=k, solver="native", lower=False, progress=False)
        assert one.verified
        assert one.bound >= r.value * (1 - 1e-9), k  # a sound bound is never below the exact constant
        assert per.per_output[k] >= r.value * (1 - 1e-9), k
        assert one.bound == pytest.approx(per.per_output[k], rel=1e-5)  # the same SDP, solved twice
        assert one.bound < one.naive_bound
    lb = lipsdp.lower_bound(net, norm="linf", output=0)  # bias-free, 18 neurons: the MILP is tried
    assert lb.kind == "exact" and lb.value == pytest.approx(exact[0].value, rel=1e-6)


def test_linf_orders_neuron_channel_layer_and_stays_above_a_quotient():
    net = _small_cnn()
    lb = lipsdp.lower_bound(net, norm="linf", output=1)
    assert _quotient(net, lb) == pytest.approx(lb.value, rel=1e-9)
    b = {m: lipsdp.certify(net, norm="linf", output=1, method=m, solver="native", lower=False, progress=False)
         for m in ("neuron", "channel")}
    assert all(c.verified for c in b.values())
    assert lb.value <= b["neuron"].bound <= b["channel"].bound * (1 + REL)
    assert b["channel"].bound < b["channel"].naive_bound


def test_l2_one_logit_below_all_outputs_and_above_its_quotient():
    net = _small_cnn()
    full = lipsdp.certify(net, solver="native", progress=False)
    assert full.verified and full.lower_bound is not None
    assert full.lower_kind == "quotient" and full.lower_bound <= full.bound < full.naive_bound
    one = lipsdp.certify(net, output=2, solver="native", lower=False, progress=False)
    assert one.verified and one.bound <= full.bound * (1 + REL)
    lb = lipsdp.lower_bound(net, output=2)
    assert _quotient(net, lb) == pytest.approx(lb.value, rel=1e-9)  # a real difference quotient
    assert lb.value <= one.bound
    # the channel multipliers are a sub-family: never tighter than neuron-wise, on one logit too
    ch = lipsdp.certify(net, output=2, method="channel", solver="native", lower=False, progress=False)
    assert ch.verified and ch.bound >= one.bound * (1 - REL)


def test_lower_bound_jacobian_is_the_dense_product_on_conv_pool_and_residual_layers():
    """The lower bound's Jacobian is pulled back through operators (no dense layer Jacobian);
    it must equal the product of the dense layer Jacobians on convolutions, a max pool (GroupSort
    of the window gather) and residual blocks."""
    from lipsdp.lower import _NetworkOracle

    rng = np.random.default_rng(3)
    conv = Conv(rng.standard_normal((4, 1, 3, 3)), (1, 4, 4), padding=1)  # 64 outputs
    gather = np.zeros((64, 64))
    gather[np.arange(64), rng.permutation(64)] = 1.0  # a window gather is a permutation
    body = (Affine(rng.standard_normal((16, 16))), SlopeRestricted("relu"), Affine(rng.standard_normal((16, 16))))
    net = Network([Affine(conv, rng.standard_normal(64)), SlopeRestricted("relu"), Affine(gather), GroupSort(4),
                   Affine(rng.standard_normal((16, 64))), Residual(body), SlopeRestricted("relu"),
                   Affine(rng.standard_normal((3, 16)))])
    x = rng.standard_normal(16)
    J, R, z0 = _NetworkOracle(net).jacobian(x)
    dense, y = [], x
    for layer in net.layers:
        if isinstance(layer, Affine):
            dense.append(layer.weight)
        elif isinstance(layer, Residual):
            Jb, yb = np.eye(layer.dim), y
            for inner in layer.body:
                Jb = (inner.weight if isinstance(inner, Affine) else inner.jacobian(yb)) @ Jb
                yb = inner.forward(yb)
            dense.append(np.eye(layer.dim) + Jb)
        else:
            dense.append(layer.jacobian(y))
        y = layer.forward(y)
    ref = np.linalg.multi_dot(dense[::-1])
    np.testing.assert_allclose(J, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R, np.linalg.multi_dot(dense[:1:-1]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z0, net.layers[0].forward(x), rtol=0, atol=0)
    # finite difference along a random direction agrees with J (the quotients come from these)
    d = rng.standard_normal(16) * 1e-7
    np.testing.assert_allclose(net.forward(x + d) - net.forward(x), J @ d, rtol=1e-5, atol=1e-12)


def _demo():
    pytest.importorskip("torch")
    from lipsdp.models.train_demo_cnn import load_demo_cnn

    model = load_demo_cnn()
    return model, lipsdp.from_torch(model, input_shape=(1, 8, 8))


def test_report_and_html_of_a_cnn_certificate(tmp_path):
    pytest.importorskip("matplotlib")
    from lipsdp.report import write_report

    model, net = _demo()
    assert isinstance(net.affines[0].op, Conv)
    cert = lipsdp.certify(net, norm="linf", output=3, solver="native", progress=False)
    assert cert.verified and cert.lower_bound <= cert.bound < cert.naive_bound
    html = cert._repr_html_()
    assert f"{cert.bound:.6g}" in html and "linf" in html
    path = write_report(cert, tmp_path / "r.html", network=net, title="digits CNN")
    text = (tmp_path / "r.html").read_text()
    assert path.endswith("r.html") and "digits CNN" in text and "<h2>Layers</h2>" in text
    conv_norm = float(np.linalg.norm(net.affines[0].weight, 2))  # the dense matrix, computed here
    assert f"{conv_norm:.6g}" in text  # the report's norm of the convolution (an operator estimate)
    assert "NOT VERIFIED" not in str(cert)


def test_batch_job_of_a_cnn_checkpoint_and_its_onnx_export(tmp_path):
    """A manifest with the digits CNN as a state dict + class and as an ONNX file: the job bodies
    that ``lipsdp batch`` runs on its workers give the same checked bounds as certify."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("yaml")
    pytest.importorskip("onnx")
    import warnings

    from lipsdp import batch
    from lipsdp.batch.worker import _certify_spec
    from dataclasses import asdict

    import copy

    model, net = _demo()
    torch.save(model.state_dict(), tmp_path / "cnn.pt")
    (tmp_path / "cls.py").write_text(  # the class of the checkpoint, as a user would write it
        "from torch import nn\n\n\nclass DemoCNN(nn.Sequential):\n    def __init__(self):\n"
        "        super().__init__()\n"
        "        for name, mod in (('conv', nn.Conv2d(1, 8, 3, 2, 1)), ('r1', nn.ReLU()), ('flat', nn.Flatten()),\n"
        "                          ('fc1', nn.Linear(128, 32)), ('r2', nn.ReLU()), ('fc2', nn.Linear(32, 10))):\n"
        "            self.add_module(name, mod)\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(model).float(), (torch.zeros((1, 1, 8, 8)),), str(tmp_path / "cnn.onnx"),
                          dynamo=False)
    (tmp_path / "m.yaml").write_text(
        "jobs:\n"
        "  - model: cnn.pt\n    model_class: cls.py:DemoCNN\n    input_shape: [1, 8, 8]\n"
        "    norm: linf\n    output: 3\n    lower: false\n"
        "  - model: cnn.onnx\n    norm: linf\n    output: 3\n    lower: false\n")
    jobs = batch.load_manifest(tmp_path / "m.yaml")
    assert len(jobs) == 2
    certs = []
    for job in jobs:
        spec = {k: v for k, v in asdict(job).items() if k != "source"}
        spec["output"] = job.params()["output"]
        res = _certify_spec(spec)
        assert res["status"] == "ok", res
        certs.append(res["certificate"])
    assert all(c["verified"] and c["norm"] == "linf" and c["bound"] < c["naive_bound"] for c in certs)
    # the same network read two ways (the ONNX file holds float32 weights): the same SDP optimum
    assert certs[0]["bound"] == pytest.approx(certs[1]["bound"], rel=1e-5)
    lb = lipsdp.lower_bound(net, norm="linf", output=3, steps=5, ascent_steps=10)
    assert lb.value <= min(c["bound"] for c in certs)


def _suite():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cnn_suite.py"
    spec = importlib.util.spec_from_file_location("lipsdp_benchmark_cnn_suite", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cnn_suite_networks_are_the_stated_ones():
    """benchmarks/cnn_suite.py builds what its docstring says: the CIFAR-10-shaped CNN has 4 096 +
    2 048 + 100 hidden neurons, and the all-conv generator scales every convolution to norm ≈ 1."""
    torch = pytest.importorskip("torch")
    suite = _suite()
    model, shape = suite.module("cifar")
    net = lipsdp.from_torch(model, shape)
    assert shape == (3, 32, 32) and [a.size for a in net.activations] == [4096, 2048, 100]
    assert [type(a.op).__name__ for a in net.affines][:2] == ["Conv", "Conv"]
    x = torch.randn((1,) + shape, dtype=torch.float64)
    np.testing.assert_allclose(net.forward(x.reshape(-1).numpy()), model(x).detach().numpy().ravel(), atol=1e-12)
    small = suite.allconv_net(layers=2, channels=4)
    net = lipsdp.from_torch(small, (1, 28, 28))
    norms = [a.op.norm2_estimate() for a in net.affines[:2]]
    assert all(1.99 < n < 2.02 for n in norms), norms  # the power-iteration estimate is within 1 %
    assert suite.parse_nets("cifar,2C2F") == ["cifar", "2C2F"] and suite.parse_nets(None) == list(suite.NETS)
    row = {"net": "cifar", "cap": 20.0, "bound": 1.0, "verified": True, "lower": 2.0, "status": "optimal"}
    assert "BOUND BELOW THE SAMPLED LOWER BOUND" in suite.table([row])


def test_onnx_cnn_keeps_its_layers_sparse(tmp_path):
    """An ONNX CNN with a Pad, a BatchNorm, an average pool and a Linear is read with memory
    proportional to the nonzeros (Pad / BatchNorm / pool are sparse, merged into the convolutions),
    computes the module's function and keeps the channel layout that method="channel" uses."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import warnings

    import torch.nn.functional as F
    from torch import nn

    from lipsdp.io_onnx import load_onnx

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 5 * 5, 3)

        def forward(self, x):
            x = F.avg_pool2d(torch.relu(self.bn(self.conv(F.pad(x, (1, 1, 1, 1))))), 2)
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    m = Net()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    m.eval()
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros((1, 2, 10, 10)),), str(path), dynamo=False, do_constant_folding=False)
    net = load_onnx(path)
    ops = [a.op for a in net.affines]
    assert type(ops[0]).__name__ in ("Conv", "Sparse") and ops[0].nnz <= 4 * 100 * 2 * 9  # ≤ C_out·|out|·C_in·|k|
    assert [a.channels for a in net.activations] == [4]
    x = torch.randn((1, 2, 10, 10))
    with torch.no_grad():
        ref = m(x).numpy().ravel()
    np.testing.assert_allclose(net.forward(x.double().numpy().ravel()), ref, rtol=1e-5, atol=1e-5)


def test_run_py_dispatches_the_cnn_suite():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("lipsdp_benchmark_run_cnn", path)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    with pytest.raises(SystemExit, match="unknown network"):  # refused before anything runs
        run.main(["--suite", "cnn", "--nets", "2C2F,nope"])
