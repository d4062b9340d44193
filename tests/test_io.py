"""lipsdp.io: from_weights and load (every format and every error path).

Reference files: shared/refdata/LipSDP (SOURCE.md: 'weights' cell, dims [784, 50, 10] and
[2, 10, 30, 20, 2]) and shared/refdata/QCs_MaxMin (NOTE.md: 'W' cell, MaxMin nets).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import InvalidNetworkError, ModelLoadError
from lipsdp.io import ACTIVATION_NAMES, from_weights, load
from lipsdp.ir import GroupSort, Householder, SlopeRestricted

from tests.refdata import LIPSDP, MAXMIN as MAXMIN_DIR

MNIST = LIPSDP / "mnist_weights.mat"
RANDOM = LIPSDP / "random_weights.mat"
MAXMIN = MAXMIN_DIR / "weights_l2_2fc_16.mat"
needs_ref = pytest.mark.skipif(not MNIST.exists(), reason="shared refdata not found (set LIPSDP_REFDATA)")


def _rand_weights(dims, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((dims[k + 1], dims[k])) for k in range(len(dims) - 1)]


# --- from_weights ---------------------------------------------------------------------------


def test_from_weights_relu_structure_and_forward():
    W = _rand_weights([3, 5, 4, 2])
    b = [np.ones(5), None, np.arange(2.0)]
    net = from_weights(W, biases=b, name="t")
    assert net.dims == [3, 5, 4, 2] and net.name == "t"
    assert all(isinstance(a, SlopeRestricted) and a.fn == "relu" for a in net.activations)
    x = np.array([0.3, -1.0, 2.0])
    ref = W[2] @ np.maximum(W[1] @ np.maximum(W[0] @ x + 1, 0), 0) + np.arange(2.0)
    np.testing.assert_allclose(net.forward(x), ref)


def test_from_weights_single_matrix_is_affine():
    W = np.arange(6.0).reshape(2, 3)
    for arg in (W, [W]):
        net = from_weights(arg)
        assert len(net.layers) == 1 and net.activations == []
        np.testing.assert_array_equal(net.weights[0], W)


@pytest.mark.parametrize("name", sorted(lipsdp.ir.SLOPE_FUNCTIONS))
def test_from_weights_every_slope_name(name):
    net = from_weights(_rand_weights([3, 4, 2]), activation=name)
    assert net.activations[0].fn == name


def test_from_weights_groupsort_maxmin_householder_and_instance():
    W = _rand_weights([3, 4, 4, 2])
    assert all(a.group_size == 2 for a in from_weights(W, "maxmin").activations)
    assert all(a.group_size == 4 for a in from_weights(W, "groupsort", group_size=4).activations)
    v = np.array([1.0, -1.0])
    net = from_weights(W, "householder", vectors=v)
    assert all(isinstance(a, Householder) and a.n_groups == 2 for a in net.activations)
    net = from_weights(W, "householder", vectors=[v, np.array([[1.0, 0.0], [0.0, 1.0]])])
    np.testing.assert_allclose(net.activations[1].vectors, np.eye(2))
    net = from_weights(W, GroupSort(2))
    assert [a.describe() for a in net.activations] == ["maxmin", "maxmin"]


def test_from_weights_errors_name_the_layer():
    W = _rand_weights([3, 4, 2])
    with pytest.raises(InvalidNetworkError, match="weight 1.*columns"):
        from_weights([W[0], np.ones((2, 5))])
    with pytest.raises(InvalidNetworkError, match="weight 0.*2-D"):
        from_weights([np.ones((2, 3, 4))])
    bad = W[1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidNetworkError, match="weight 1.*NaN"):
        from_weights([W[0], bad])
    with pytest.raises(InvalidNetworkError, match="weight 0.*empty"):
        from_weights([np.zeros((0, 3))])
    with pytest.raises(InvalidNetworkError, match="expected 2 entries"):
        from_weights(W, biases=[None])
    with pytest.raises(InvalidNetworkError, match="bias 1.*2 entries"):
        from_weights(W, biases=[None, np.ones(3)])
    with pytest.raises(InvalidNetworkError, match="weight 0.*numeric"):
        from_weights([[["a", "b"]]])
    with pytest.raises(InvalidNetworkError, match="empty"):
        from_weights([])


def test_from_weights_activation_errors_list_valid_names():
    W = _rand_weights([3, 4, 2])
    with pytest.raises(InvalidNetworkError, match="unknown name 'swishy'") as err:
        from_weights(W, "swishy")
    for name in ACTIVATION_NAMES:
        assert name in str(err.value)
    with pytest.raises(InvalidNetworkError, match="needs group_size"):
        from_weights(W, "groupsort")
    with pytest.raises(InvalidNetworkError, match="needs vectors"):
        from_weights(W, "householder")
    with pytest.raises(InvalidNetworkError, match="only used with"):
        from_weights(W, "relu", group_size=2)
    with pytest.raises(InvalidNetworkError, match="hidden layer 0"):
        from_weights([np.ones((3, 3)), np.ones((2, 3))], "maxmin")  # 3 neurons, groups of 2
    with pytest.raises(InvalidNetworkError, match="one array per hidden layer"):
        from_weights(W, "householder", vectors=[np.ones(2), np.ones(2)])


# --- load: reference files --------------------------------------------------------------------


@needs_ref
def test_load_lipsdp_mat_files():
    net = load(MNIST)
    assert net.dims == [784, 50, 10] and net.activations[0].fn == "relu" and net.name == "mnist_weights"
    from scipy.io import loadmat

    W = loadmat(str(MNIST))["weights"].ravel()
    np.testing.assert_array_equal(net.weights[1], W[1])
    assert load(str(RANDOM)).dims == [2, 10, 30, 20, 2]


@needs_ref
def test_load_qcs_maxmin_W_cell_activation_is_callers_choice():
    assert load(MAXMIN).activations[0].describe() == "relu"
    net = load(MAXMIN, activation="maxmin")
    assert net.dims == [784, 16, 10] and net.activations[0].describe() == "maxmin"


# --- load: generated files -----------------------------------------------------------------


def test_load_npz_round_trip_with_metadata(tmp_path):
    W = _rand_weights([4, 6, 3])
    b = [np.ones(6), np.zeros(3)]
    f = tmp_path / "net.npz"
    np.savez(f, W0=W[0], W1=W[1], b0=b[0], b1=b[1], activation=np.array("tanh"),
             description=np.array("test"), test_accuracy=np.array(0.5))
    net = load(f)
    assert net.activations[0].fn == "tanh"
    x = np.linspace(-1, 1, 4)
    np.testing.assert_allclose(net.forward(x), W[1] @ np.tanh(W[0] @ x + 1))
    assert load(f, activation="TANH").activations[0].fn == "tanh"
    with pytest.raises(ModelLoadError, match="file says activation 'tanh'"):
        load(f, activation="relu")


def test_load_npz_alternative_keys_and_options(tmp_path):
    W = _rand_weights([4, 6, 2])
    f = tmp_path / "g.npz"
    np.savez(f, weights_0=W[0], weights_1=W[1], biases_1=np.ones(2), activation=np.array("groupsort"),
             group_size=np.array(3))
    net = load(f)
    assert net.activations[0].group_size == 3 and net.affines[0].bias is None
    np.savez(f, W0=W[0], W1=W[1], activation=np.array("householder"), vectors=np.array([1.0, -1.0]))
    assert isinstance(load(f).activations[0], Householder)


def test_load_npz_errors(tmp_path):
    W = _rand_weights([4, 6, 2])
    f = tmp_path / "e.npz"
    np.savez(f, W0=W[0], W2=W[1])
    with pytest.raises(ModelLoadError, match="without gaps"):
        load(f)
    np.savez(f, A=W[0])
    with pytest.raises(ModelLoadError, match="expected keys W0, W1"):
        load(f)
    np.savez(f, W0=W[0], weights_1=W[1])
    with pytest.raises(ModelLoadError, match="one naming style"):
        load(f)
    np.savez(f, W0=W[0], W1=W[1], b5=np.ones(2))
    with pytest.raises(ModelLoadError, match="no matching weight"):
        load(f)
    np.savez(f, W0=W[0], W1=W[1], activation=np.array({"a": 1}, dtype=object))
    with pytest.raises(ModelLoadError, match="pickled objects"):
        load(f)
    bad = W[1].copy()
    bad[1, 1] = np.nan
    np.savez(f, W0=W[0], W1=bad)
    with pytest.raises(InvalidNetworkError, match="weight 1.*NaN"):
        load(f)
    np.savez(f, W0=W[0], W1=np.ones((2, 5)))
    with pytest.raises(InvalidNetworkError, match="weight 1"):
        load(f)


def test_load_mat_generated_and_errors(tmp_path):
    from scipy.io import savemat

    W = _rand_weights([3, 5, 2])
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = W
    f = tmp_path / "n.mat"
    savemat(f, {"weights": cell})
    np.testing.assert_array_equal(load(f).weights[0], W[0])
    savemat(f, {"W": W[0]})
    assert load(f).dims == [3, 5]
    savemat(f, {"other": W[0]})
    with pytest.raises(ModelLoadError, match="'weights'.*'W'.*found variables \\['other'\\]"):
        load(f)


@needs_ref
@pytest.mark.parametrize("src", ["mnist", "npz"])
def test_load_truncated_file(tmp_path, src):
    if src == "mnist":
        data = MNIST.read_bytes()
        f = tmp_path / "half.mat"
    else:
        g = tmp_path / "full.npz"
        np.savez(g, W0=np.ones((30, 30)), W1=np.ones((2, 30)))
        data = g.read_bytes()
        f = tmp_path / "half.npz"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="half"):
        load(f)


def test_load_path_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load(tmp_path / "missing.npz")
    with pytest.raises(ModelLoadError, match="is a directory"):
        load(tmp_path)
    f = tmp_path / "w.h5"
    f.write_bytes(b"abc")
    with pytest.raises(ModelLoadError, match="unknown file type '.h5'.*\\.npz.*\\.onnx"):
        load(f)
    if importlib.util.find_spec("onnx") is not None:
        o = tmp_path / "w.onnx"
        o.write_bytes(b"abc")
        with pytest.raises(ModelLoadError, match="w.onnx: not a readable ONNX model"):
            load(o)
    t = tmp_path / "text.npz"
    t.write_text("W0 = [[1, 2], [3, 4]]\n")
    with pytest.raises(ModelLoadError, match="not an .npz archive"):
        load(t)
    e = tmp_path / "empty.npz"
    e.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load(e)
    g = tmp_path / "garbage.mat"
    g.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ModelLoadError, match="garbage.mat"):
        load(g)
    with pytest.raises(ModelLoadError, match="expected a file path"):
        load(12)


def test_load_never_writes(tmp_path):
    W = _rand_weights([3, 4, 2])
    f = tmp_path / "n.npz"
    np.savez(f, W0=W[0], W1=W[1])
    before = sorted(p.name for p in tmp_path.iterdir())
    load(f)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_top_level_lazy_names():
    assert lipsdp.load is load and lipsdp.from_weights is from_weights


# --- torch files ------------------------------------------------------------------------------


def test_load_pt_list_dict_and_sequential_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    seq = seq.double()
    x = torch.randn(3, 4, dtype=torch.float64)
    f = tmp_path / "sd.pt"
    torch.save(seq.state_dict(), f)
    net = load(f)
    assert net.dims == [4, 6, 2]
    np.testing.assert_allclose(net.forward(x.numpy()), seq(x).detach().numpy(), atol=1e-12)

    ws = [seq[1].weight.detach(), seq[3].weight.detach()]
    g = tmp_path / "list.pth"
    torch.save(ws, g)
    assert load(g).dims == [4, 6, 2]
    h = tmp_path / "dict.pt"
    torch.save({"weights": ws, "biases": [seq[1].bias.detach(), None], "activation": "tanh"}, h)
    net = load(h)
    assert net.activations[0].fn == "tanh" and net.affines[1].bias is None


def test_load_pt_ambiguous_state_dict_refused(tmp_path):
    torch = pytest.importorskip("torch")

    class Policy(torch.nn.Module):  # the SAC pitfall: log_std.weight is not a layer
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 8)
            self.mu = torch.nn.Linear(8, 2)
            self.log_std = torch.nn.Linear(8, 2)

    f = tmp_path / "policy.pt"
    torch.save(Policy().state_dict(), f)
    with pytest.raises(ModelLoadError, match="lipsdp.from_torch"):
        load(f)
    # a Sequential with BatchNorm (1-D weight, running stats) and adjacent Linear layers
    seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    torch.save(seq.state_dict(), f)
    with pytest.raises(ModelLoadError, match="from_torch"):
        load(f)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    torch.save(seq.state_dict(), f)
    with pytest.raises(ModelLoadError, match="adjacent"):
        load(f)
    torch.save({"foo": 1}, f)
    with pytest.raises(ModelLoadError):
        load(f)


class _Evil:
    """Unpickling this would create a file (stand-in for arbitrary code execution)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_load_pt_pickle_not_executed_without_opt_in(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "pwned.txt"
    f = tmp_path / "evil.pt"
    torch.save({"weights": [torch.eye(2)], "payload": _Evil(str(target))}, f)
    assert not target.exists()
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        load(f)
    assert not target.exists()


def test_load_pt_pickled_module_with_opt_in(tmp_path):
    torch = pytest.importorskip("torch")
    seq = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    f = tmp_path / "module.pt"
    torch.save(seq, f)
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        load(f)
    try:
        import lipsdp.models.export  # noqa: F401  (written by another developer)
    except ImportError:
        with pytest.raises(ModelLoadError, match="from_torch"):
            load(f, allow_pickle=True)
        return
    net = load(f, allow_pickle=True)
    x = np.random.default_rng(0).standard_normal((2, 3))
    y = seq.double()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(net.forward(x), y, atol=1e-6)


def test_load_pt_truncated(tmp_path):
    torch = pytest.importorskip("torch")
    g = tmp_path / "full.pt"
    torch.save([torch.ones(20, 20), torch.ones(2, 20)], g)
    data = g.read_bytes()
    f = tmp_path / "half.pt"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a readable torch file"):
        load(f)


def test_shipped_demo_digits_npz():
    f = Path(lipsdp.__file__).parent / "data" / "demo_digits.npz"
    net = load(f)
    assert net.dims == [64, 32, 32, 10] and net.activations[0].fn == "relu"
    with np.load(f, allow_pickle=False) as d:
        assert float(d["test_accuracy"]) > 0.9 and "load_digits" in str(d["description"])
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    assert np.mean(net.forward(X / 16.0).argmax(1) == y) > 0.9
