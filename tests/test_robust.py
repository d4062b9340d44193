"""lipsdp.certified_accuracy: margin bound, monotone in the radius, consistent with a direct check."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lipsdp
from lipsdp.errors import LipSDPError
from lipsdp.robust import certified_radii


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    Ws = [rng.standard_normal((8, 4)) / 2, rng.standard_normal((3, 8)) / 3]
    net = lipsdp.from_weights(Ws)
    X = rng.standard_normal((200, 4))
    y = net.forward(X).argmax(1)
    flip = rng.random(200) < 0.2          # some misclassified points
    y[flip] = (y[flip] + 1) % 3
    return net, X, y


RADII = [0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0]


def test_monotone_and_direct_check(setup):
    net, X, y = setup
    res = lipsdp.certified_accuracy(net, X, y, RADII, solver="cvxopt")
    acc = np.asarray(res.accuracy)
    assert np.all(np.diff(acc) <= 0), acc
    # direct: margin > sqrt(2) L eps with the certified bound of the whole network
    L = lipsdp.certify(net, solver="cvxopt", lower=False).bound
    f = net.forward(X)
    fy = f[np.arange(len(y)), y]
    other = np.where(np.eye(3, dtype=bool)[y], -np.inf, f).max(1)
    m = fy - other
    for eps, a in zip(RADII, acc):
        direct = np.mean(m > 0) if eps == 0 else np.mean(m > math.sqrt(2) * L * eps)
        assert a == pytest.approx(direct, abs=1e-12), (eps, a, direct)
    assert res.clean_accuracy == pytest.approx(np.mean(m > 0))
    assert 0.5 < res.clean_accuracy < 0.95      # the fixture flipped ~20% of the labels
    assert res.accuracy[-1] < res.accuracy[0]    # the curve actually drops on this net
    assert res.to_frame().shape == (len(RADII), 2)


def test_pairwise_is_tighter_and_sound(setup):
    net, X, y = setup
    base = lipsdp.certified_accuracy(net, X, y, RADII, solver="cvxopt")
    pair = lipsdp.certified_accuracy(net, X, y, RADII, pairwise=True, solver="cvxopt")
    assert np.all(pair.radii_per_point >= base.radii_per_point - 1e-12)
    assert np.all(np.asarray(pair.accuracy) >= np.asarray(base.accuracy))
    # L_ij ≤ sqrt(2) L for every pair (‖e_i − e_j‖ = sqrt(2)), and ≥ a sampled lower bound
    Lnet = base.L[0, 1] / math.sqrt(2)
    for (i, j), c in pair.certificates.items():
        assert pair.L[i, j] == pair.L[j, i] <= math.sqrt(2) * Lnet * (1 + 1e-6)
        e = np.zeros(3); e[i], e[j] = 1, -1
        assert pair.L[i, j] >= float(lipsdp.lower_bound(net, output=e)) * (1 - 1e-9)
    # soundness: random perturbations inside the certified radius never flip the prediction
    rng = np.random.default_rng(0)
    ok = np.flatnonzero(pair.radii_per_point > 0)
    for k in ok[:50]:
        r = pair.radii_per_point[k]
        d = rng.standard_normal((64, 4))
        d *= 0.999 * r / np.linalg.norm(d, axis=1, keepdims=True)
        assert np.all(net.forward(X[k] + d).argmax(1) == y[k])


def test_linf_uses_linf_certificates_or_says_so(setup):
    net, X, y = setup
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = lipsdp.certified_accuracy(net, X[:50], y[:50], [0.0, 0.01, 0.05], norm="linf", solver="cvxopt")
    assert np.all(np.diff(res.accuracy) <= 0)
    assert "ℓ∞" in res.bounds_from or "sqrt(n)" in res.bounds_from
    # every pairwise ℓ∞ bound must be ≥ a sampled ℓ∞ lower bound of that logit difference
    e = np.zeros(3); e[0], e[1] = 1, -1
    assert res.L[0, 1] >= float(lipsdp.lower_bound(net, norm="linf", output=e)) * (1 - 1e-9)


def test_certified_radii_edge_cases():
    logits = np.array([[2.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([0, 0, 0])
    L = np.array([[0.0, 2.0], [2.0, 0.0]])
    r, correct = certified_radii(logits, y, L)
    assert correct.tolist() == [True, False, False]   # a tie is not a correct prediction
    assert r.tolist() == [0.5, 0.0, 0.0]


def test_errors(setup):
    net, X, y = setup
    with pytest.raises(LipSDPError, match="features"):
        lipsdp.certified_accuracy(net, X[:, :3], y, [0.1])
    with pytest.raises(LipSDPError, match="radii"):
        lipsdp.certified_accuracy(net, X, y, [-1.0])
    with pytest.raises(LipSDPError, match="labels"):
        lipsdp.certified_accuracy(net, X, y + 5, [0.1])


# --- local certified radii (lipsdp.robust.certified_radius) ----------------------------------


def _pgd(net, x0, y, r, norm, rng, steps=60, restarts=3):
    """Projected gradient ascent of max_j f_j − f_y inside the ball of radius r; the worst margin found."""
    worst = np.inf
    for s in range(restarts):
        d = rng.standard_normal(x0.size)
        x = x0 + (0.5 * r * d / np.linalg.norm(d) if norm == "l2" else 0.5 * r * np.sign(d)) * (s > 0)
        for _ in range(steps):
            f = net.forward(x)
            j = int(np.argmax(np.where(np.arange(f.size) == y, -np.inf, f)))
            worst = min(worst, f[y] - f[j])
            J = net.jacobian(x)
            g = J[j] - J[y]
            x = x + (r / 8) * (g / max(np.linalg.norm(g), 1e-300) if norm == "l2" else np.sign(g))
            dlt = x - x0
            if norm == "l2":
                x = x0 + dlt * min(1.0, r / max(np.linalg.norm(dlt), 1e-300))
            else:
                x = x0 + np.clip(dlt, -r, r)
        f = net.forward(x)
        worst = min(worst, f[y] - np.max(np.where(np.arange(f.size) == y, -np.inf, f)))
    return worst


def test_local_radius_never_broken_by_pgd_on_digits():
    from lipsdp.io import load
    from lipsdp.robust import certified_radius

    sklearn = pytest.importorskip("sklearn.datasets")
    from pathlib import Path

    net = load(Path(lipsdp.__file__).parent / "data" / "demo_digits.npz")
    X, y = sklearn.load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    for i in (1, 7):  # two sample digits; PGD inside the certified ball never flips the label
        r = certified_radius(net, X[i], "l2", label=y[i], iters=4)
        assert float(r) >= r.details["global_radius"] > 0
        assert _pgd(net, X[i], y[i], 0.999 * float(r), "l2", rng) > 0


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_local_radius_sound_on_small_net(norm):
    from lipsdp.robust import certified_radii_local, certified_radius

    rng = np.random.default_rng(5)
    Ws = [rng.standard_normal((12, 4)) / 2, rng.standard_normal((12, 12)) / 3, rng.standard_normal((3, 12)) / 3]
    net = lipsdp.from_weights(Ws, biases=[rng.standard_normal(12) * 0.3, rng.standard_normal(12) * 0.3, None])
    X = rng.standard_normal((4, 4))
    y = net.forward(X).argmax(1)
    frame = certified_radii_local(net, X, y, norm=norm, iters=4, linf_sdp=True)
    assert list(frame.columns) == ["label", "predicted", "correct", "margin", "radius_global", "radius_local",
                                   "evaluations"]
    assert np.all(frame.radius_local >= frame.radius_global) and np.all(frame.correct)
    assert frame.radius_local.sum() > frame.radius_global.sum()  # local bounds buy something here
    for k in range(len(X)):
        r = frame.radius_local[k]
        assert _pgd(net, X[k], y[k], 0.999 * r, norm, rng) > 0
    # a misclassified label gets radius 0
    assert float(certified_radius(net, X[0], norm, label=(y[0] + 1) % 3)) == 0.0


def test_radius_curves_plot():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from lipsdp.plot import radius_curves

    frame = pd.DataFrame({"correct": [True, True, False], "radius_local": [0.3, 0.2, 0.0],
                          "radius_global": [0.2, 0.1, 0.0]})
    ax = Figure().add_subplot()
    assert radius_curves(frame, ax=ax) is ax
    (local, glob) = ax.get_lines()
    assert local.get_ydata()[0] == pytest.approx(2 / 3) and glob.get_ydata()[-1] == 0
    assert np.all(local.get_ydata() >= glob.get_ydata())
    with pytest.raises(LipSDPError, match="radius_local"):
        radius_curves(pd.DataFrame({"correct": [True]}), ax=ax)


def test_shipped_digits_cnn_matches_its_export():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    from lipsdp.models.train_demo_cnn import SHIPPED, load_demo_cnn

    model = load_demo_cnn()
    net = lipsdp.from_torch(model, input_shape=(1, 8, 8))
    X, y = load_digits(return_X_y=True)
    X = X[:200] / 16.0
    with torch.no_grad():
        ref = model(torch.from_numpy(X).reshape(-1, 1, 8, 8)).numpy()
    assert np.allclose(net.forward(X), ref, atol=1e-10)
    acc = float(np.load(SHIPPED)["test_accuracy"])
    assert acc > 0.95  # recorded by models/train_demo_cnn.py (0.9778 at seed 0)
