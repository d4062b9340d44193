"""lipsdp.lower.lower_bound: certified lower bounds (real difference quotients).

Golden values (notes/reference-values.md):
* mnist_weights.mat: LipSDP-Neuron upper bound 24.3663; a true quotient 24.29922 found by an
  explicit construction.  Measured here (seed 0, defaults, with the Jacobian-norm ascent):
  24.2992; the test asks for >= 24.29 (the issue-16 target; 24.29613 before the ascent).
* seed-0 784-100×5-10 ReLU MLP (Gaussian / sqrt(fan-in)): 0.725 before the ascent (issue 16),
  1.173 with the default ascent (benchmarks/results-local.md); the test asks for >= 1.1.
* random_weights.mat: exact constant ||W3 W2 W1 W0||_2 = 36.48223 (all weights positive);
  measured relative gap ~1e-12 (floating-point rounding of the quotient), tolerance 1e-9.
* QCs_MaxMin weights_l2_2fc_16 (MaxMin): sampled lower bound 22.0213, P-free SDP 22.0744.
"""

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import FormulationError, InvalidNetworkError
from lipsdp.io import from_weights, load
from lipsdp.lower import LowerBound, lower_bound

from tests.refdata import LIPSDP, MAXMIN

MNIST = LIPSDP / "mnist_weights.mat"
RANDOM = LIPSDP / "random_weights.mat"
MAXMIN16 = MAXMIN / "weights_l2_2fc_16.mat"
needs_ref = pytest.mark.skipif(not MNIST.exists(), reason="shared refdata not found (set LIPSDP_REFDATA)")


def _rand_net(dims, seed, activation="relu", biases=False):
    rng = np.random.default_rng(seed)
    W = [rng.standard_normal((dims[k + 1], dims[k])) / np.sqrt(dims[k]) for k in range(len(dims) - 1)]
    b = [rng.standard_normal(d) for d in dims[1:]] if biases else None
    return from_weights(W, activation, biases=b)


def _check_witness(net, lb, C=None):
    """The reported value is the quotient of the two inputs it names."""
    x1 = lb.x.ravel()
    x2 = x1 + lb.step * lb.direction.ravel()
    dy = net.forward(x2) - net.forward(x1)
    if C is not None:
        dy = C @ dy
    dx = x2 - x1
    dn = np.linalg.norm(dx) if lb.norm == "l2" else np.max(np.abs(dx))
    assert np.linalg.norm(dy) / dn == pytest.approx(lb.value, rel=1e-9)  # batch vs single-row BLAS rounding


@needs_ref
def test_mnist_between_known_quotient_and_lipsdp_neuron():
    net = load(MNIST)
    lb = lower_bound(net)
    assert isinstance(lb, LowerBound) and lb.norm == "l2"
    assert 24.29 <= float(lb) <= 24.3663
    _check_witness(net, lb)


@needs_ref
def test_random_weights_reaches_exact_constant():
    net = load(RANDOM)
    W = net.weights
    exact = np.linalg.norm(W[3] @ W[2] @ W[1] @ W[0], 2)
    assert exact == pytest.approx(36.48223, abs=1e-5)
    for seed in range(3):
        lb = lower_bound(net, seed=seed)
        assert abs(lb.value - exact) <= 1e-9 * exact  # never above beyond rounding, within 1e-9
        _check_witness(net, lb)


@needs_ref
def test_maxmin_reference_net():
    net = load(MAXMIN16, activation="maxmin")
    lb = lower_bound(net)
    assert 0.99 * 22.0213 <= lb.value <= 22.0744


def test_one_layer_equals_spectral_norm():
    W = np.random.default_rng(3).standard_normal((5, 7))
    net = from_weights([W])
    assert lower_bound(net).value == pytest.approx(np.linalg.norm(W, 2), rel=1e-9)
    # ℓ∞ -> |c^T W x|: exactly ||W^T c||_1
    lb = lower_bound(net, norm="linf", output=2)
    assert lb.value == pytest.approx(np.abs(W[2]).sum(), rel=1e-9)
    c = np.arange(5.0)
    assert lower_bound(net, norm="linf", output=c).value == pytest.approx(np.abs(c @ W).sum(), rel=1e-9)
    lb = lower_bound(net, norm="linf")
    assert lb.value == pytest.approx(np.abs(W).sum(axis=1).max(), rel=1e-9)
    assert lb.output == int(np.argmax(np.abs(W).sum(axis=1)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("activation", ["relu", "tanh", "maxmin", "leaky_relu"])
def test_random_nets_below_product_of_norms(seed, activation):
    net = _rand_net([6, 8, 8, 3], seed, activation, biases=seed % 2 == 1)
    lb = lower_bound(net, n_samples=32, steps=5, seed=seed)
    assert 0 < lb.value <= np.prod([np.linalg.norm(W, 2) for W in net.weights]) * (1 + 1e-9)
    _check_witness(net, lb)
    lbi = lower_bound(net, norm="linf", output=1, n_samples=32, steps=5, seed=seed)
    W = net.weights
    mp_inf = np.abs(W[-1][1]) @ np.abs(W[1]) @ np.abs(W[0])  # |c^T| |W1| |W0| bounds ||grad||_1 (slopes in [0,1])
    if activation != "maxmin":
        assert lbi.value <= mp_inf.sum() * (1 + 1e-9)
    _check_witness(net, lbi, C=np.eye(3)[[1]])


def test_deterministic_given_seed_and_float():
    net = _rand_net([5, 10, 10, 2], 1, biases=True)
    a, b = lower_bound(net, seed=4), lower_bound(net, seed=4)
    assert a.value == b.value and np.array_equal(a.x, b.x)
    assert float(a) == a.value and "quotient" in a.method


def test_default_cost_small_for_784_100x5_10(monkeypatch):
    """Measured 0.26-0.39 s wall on an idle 2-core box.  Wall time is flaky on a shared machine,
    so the test bounds the work (Jacobian evaluations) and keeps only a loose wall-clock guard."""
    import time

    from lipsdp import lower

    calls = []
    original = lower._NetworkOracle.jacobian
    monkeypatch.setattr(lower._NetworkOracle, "jacobian", lambda self, x: calls.append(1) or original(self, x))
    net = _rand_net([784] + [100] * 5 + [10], 0)
    t = time.perf_counter()
    lb = lower_bound(net)
    assert time.perf_counter() - t < 20.0
    assert len(calls) <= 16 + 8 * 20 * 6  # 16 samples for this size, 8 starts x 20 steps x 6 proposals
    assert lb.value >= 1.1  # the sampled search alone gave 0.725 (module docstring)


def test_argument_errors():
    net = _rand_net([3, 4, 2], 0)
    with pytest.raises(FormulationError, match="unknown norm"):
        lower_bound(net, norm="l1")
    with pytest.raises(FormulationError, match="2 outputs"):
        lower_bound(net, output=5)
    with pytest.raises(FormulationError, match="length 2"):
        lower_bound(net, output=np.ones(3))
    with pytest.raises(InvalidNetworkError, match="expected a lipsdp Network"):
        lower_bound(object())


@needs_ref
def test_accepts_a_path_and_top_level_name():
    assert lipsdp.lower_bound is lower_bound
    lb = lower_bound(str(RANDOM), n_samples=16, steps=3)
    assert lb.value == pytest.approx(36.48223, rel=1e-6)


def test_torch_module_matches_ir_and_autograd_fallback(monkeypatch):
    torch = pytest.importorskip("torch")
    import sys

    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    params = [p.detach().double().numpy() for p in seq.parameters()]
    net = from_weights(params[0::2], biases=params[1::2])
    ub = np.prod([np.linalg.norm(W, 2) for W in net.weights])
    lb_t = lower_bound(seq, n_samples=32, steps=5)
    assert lb_t.x.shape == (6,) and 0 < lb_t.value <= ub
    _check_witness(net, lb_t)  # the torch quotient is a quotient of the same function
    # without the IR exporter: plain autograd search, still a real quotient
    monkeypatch.setitem(sys.modules, "lipsdp.models.export", None)
    lb_a = lower_bound(seq, n_samples=32, steps=5)
    assert 0 < lb_a.value <= ub
    _check_witness(net, lb_a)
    assert seq[0].weight.dtype == torch.float32  # the caller's module is not modified


def test_torch_module_needs_input_shape_without_linear():
    torch = pytest.importorskip("torch")
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    with pytest.raises(InvalidNetworkError, match="input_shape"):
        lower_bound(conv)
    lb = lower_bound(conv, input_shape=(1, 5, 5), n_samples=8, steps=2)
    assert lb.x.shape == (1, 5, 5) and lb.value > 0
