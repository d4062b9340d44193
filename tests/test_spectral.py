"""The first-order ``spectral`` backend (lipsdp/backends/spectral.py): ρ(multipliers) as the top
eigenvalue of the Schur complement, minimised by L-BFGS.  Known answers: the golden LipSDP-Neuron
value of mnist_weights.mat (reference-values.md) and native's optimum on a small CNN."""

import numpy as np
import pytest

import lipsdp
from lipsdp.backends import REGISTRY, SolveOptions
from lipsdp.backends.spectral import SpectralBackend, _EigenForm
from lipsdp.formulations import formulation_for

from .refdata import REFDATA as REF
from .test_channel import _cnn


def _tiny_cnn(seed=1):
    """1×6×6 → conv(1→2, k3, p1) → relu → conv(2→2, k3, s2, p1) → relu → linear(18→3); seeded
    Gaussian kernels scaled by 1/sqrt(fan-in)."""
    from lipsdp import Affine, Network, SlopeRestricted
    from lipsdp.linop import Conv

    rng = np.random.default_rng(seed)
    c1 = Conv(rng.standard_normal((2, 1, 3, 3)) / 3.0, (1, 6, 6), padding=1)
    c2 = Conv(rng.standard_normal((2, 2, 3, 3)) / np.sqrt(18), (2, 6, 6), stride=2, padding=1)
    return Network([Affine(c1, rng.standard_normal(72)), SlopeRestricted("relu"),
                    Affine(c2, rng.standard_normal(18)), SlopeRestricted("relu"),
                    Affine(rng.standard_normal((3, 18)) / np.sqrt(18))])

MNIST = REF / "LipSDP" / "mnist_weights.mat"
MNIST_NEURON = 24.3663  # reference-values.md: mnist_weights LipSDP-Neuron re-solved (tests/test_native.py BANK)


def test_mnist_weights_reaches_the_neuron_optimum_checked():
    cert = lipsdp.certify(MNIST, solver="spectral", lower=False)
    assert cert.verified and cert.solver == "spectral"
    native = lipsdp.certify(MNIST, solver="native", lower=False)
    # never below the SDP optimum (the check computes ρ exactly for the multipliers), and close to it
    assert native.bound * (1 - 1e-7) <= cert.bound <= native.bound * (1 + 1e-4)
    assert abs(cert.bound - MNIST_NEURON) <= 1e-3 * MNIST_NEURON


def test_small_cnn_matches_native_and_stays_above_the_lower_bound():
    net = _tiny_cnn()
    cert = lipsdp.certify(net, solver="spectral")
    native = lipsdp.certify(net, solver="native", lower=False)
    assert cert.verified
    assert native.bound * (1 - 1e-7) <= cert.bound <= native.bound * (1 + 1e-3)
    assert cert.lower_bound <= cert.bound


def test_the_eigenvalue_is_the_checked_rho_and_its_gradient_is_exact():
    problem = formulation_for(_cnn(), "l2").problem()
    E = _EigenForm(problem)
    th = np.asarray(problem.start, dtype=float)
    tau = 1e-2
    f, g, lam = E.evaluate(th, tau)
    assert lam <= f <= lam + tau * np.log(len(E.R)) + 1e-12
    rng = np.random.default_rng(0)
    for _ in range(3):
        d = rng.standard_normal(th.size) * th * 1e-4
        d[E.r] = 0.0
        fd = (E.evaluate(th + d, tau)[0] - E.evaluate(th - d, tau)[0]) / 2
        assert fd == pytest.approx(g @ d, rel=1e-4, abs=1e-12 * abs(f))
    # the smallest ρ for these multipliers makes the LMI singular: λ_max of −F at ρ = λ is ~0
    th2 = th.copy()
    th2[E.r] = lam
    F = problem.lmis[0].evaluate(th2)
    assert np.linalg.eigvalsh(F)[-1] == pytest.approx(0.0, abs=1e-9 * np.abs(F).max())


def test_time_limit_gives_an_anytime_checked_bound():
    net = _cnn()
    cert = lipsdp.certify(net, solver="spectral", time_limit=0.3, lower=False)
    assert cert.verified and cert.status in ("time_limit", "optimal_inaccurate")
    assert cert.bound <= cert.naive_bound * 1.0001


def test_accepts_only_single_rho_problems():
    assert "spectral" in REGISTRY
    problem = formulation_for(_cnn(), "l2").problem()
    assert SpectralBackend.accepts(problem)
    # ℓ∞: objective with several variables (ρ and the input multipliers) is not this form
    linf = formulation_for(_cnn(), "linf", output=0).problem()
    if np.count_nonzero(linf.c) > 1:
        assert not SpectralBackend.accepts(linf)
    with pytest.raises(lipsdp.errors.SolverError):
        bad = formulation_for(_cnn(), "l2").problem()
        bad.c = np.ones_like(bad.c)
        SpectralBackend().solve(bad, SolveOptions())


@pytest.mark.parametrize("engine", ["cholmod", "qdldl"])
def test_half_solves_of_both_factorisation_engines(engine, monkeypatch):
    import scipy.sparse as sp

    from lipsdp import check_sparse
    from lipsdp.check_sparse import SparseFactor as _Factor

    if engine == "cholmod":
        pytest.importorskip("cvxopt")
    monkeypatch.setattr(check_sparse, "_engine", lambda name: check_sparse.ENGINES[engine][1])
    rng = np.random.default_rng(0)
    G = sp.random(300, 300, density=0.02, random_state=2)
    A = (G @ G.T + sp.identity(300) * 0.5).tocsc()
    B = rng.standard_normal((300, 7))
    f = _Factor.of(A)
    assert f.kind == engine
    W = f.half(B)
    X = np.linalg.solve(A.toarray(), B)
    np.testing.assert_allclose(W.T @ W, B.T @ X, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(f.back(W), X, rtol=1e-9, atol=1e-10)
    assert _Factor.of(-A) is None  # not positive definite
