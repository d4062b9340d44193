"""Core certifier: golden values with provenance, soundness properties, backends, errors.

Provenance of every golden value: /work/shared/notes/reference-values.md (the shared notes are
mirrored in tests/refdata.py, which locates the refdata folder).
"""

import json
import subprocess
import sys

import numpy as np
import pytest

import lipsdp
from lipsdp import errors
from lipsdp.backends import REGISTRY, SolveOptions, get_backend, installed_backends
from lipsdp.check import check_feedforward
from lipsdp.formulations import formulation_for
from lipsdp.constraints import REGISTRY as QC_REGISTRY
from lipsdp.constraints import QuadraticConstraint, constraint_for, register_constraint
from lipsdp.ir import Affine, GroupSort, Householder, Network, SlopeRestricted

from .refdata import LIPSDP, require

# reference-values.md, refdata/LipSDP table
RANDOM_NEURON = 36.48223  # LipSDP README 36.482, re-solved 36.48223; also the EXACT constant
RANDOM_LAYER = 39.83862  # LipSDP README 39.839, re-solved 39.83862
RANDOM_NAIVE = 43.30557
MNIST_NEURON = 24.3663  # re-solved (Clarabel, after exact input reduction)
MNIST_LAYER = 26.2560
MNIST_TRUE_QUOTIENT = 24.29922  # an explicit difference quotient: every bound must be >= this


def mlp(rng, dims, act="relu"):
    layers = []
    for i in range(len(dims) - 1):
        layers.append(Affine(rng.normal(size=(dims[i + 1], dims[i])) / np.sqrt(dims[i]), rng.normal(size=dims[i + 1])))
        if i < len(dims) - 2:
            layers.append(SlopeRestricted(act) if isinstance(act, str) else act)
    return Network(layers)


@pytest.fixture(scope="module")
def random_net():
    return lipsdp.load(require(LIPSDP / "random_weights.mat"))


@pytest.fixture(scope="module")
def mnist_net():
    return lipsdp.load(require(LIPSDP / "mnist_weights.mat"))


# --- golden values -------------------------------------------------------------------------


def test_random_weights_neuron_is_exact(random_net):
    cert = lipsdp.certify(random_net, method="neuron", lower=False)
    assert cert.verified
    # the certified value can never be below the exact constant (all weights > 0)
    assert cert.bound >= RANDOM_NEURON * (1 - 1e-6)
    assert cert.bound == pytest.approx(RANDOM_NEURON, rel=2e-6)
    assert cert.naive_bound == pytest.approx(RANDOM_NAIVE, rel=1e-6)


def test_random_weights_layer(random_net):
    cert = lipsdp.certify(random_net, method="layer", lower=False)
    assert cert.verified
    assert cert.bound == pytest.approx(RANDOM_LAYER, rel=2e-6)


def test_mnist_neuron_and_layer(mnist_net):
    neuron = lipsdp.certify(mnist_net, method="neuron", lower=False)
    layer = lipsdp.certify(mnist_net, method="layer", lower=False)
    assert neuron.verified and layer.verified
    assert neuron.bound >= MNIST_TRUE_QUOTIENT
    assert layer.bound >= MNIST_TRUE_QUOTIENT
    assert neuron.bound == pytest.approx(MNIST_NEURON, rel=1e-5)
    assert layer.bound == pytest.approx(MNIST_LAYER, rel=1e-5)


def test_mnist_true_difference_quotient_is_reproduced(mnist_net):
    """The construction of reference-values.md gives a real quotient 24.29922 < every bound."""
    W0, W1 = mnist_net.weights
    inactive = [7, 8, 11, 17, 19, 21, 23, 24, 29, 30, 38]
    t = np.ones(W0.shape[0])
    t[inactive] = -1.0
    x = np.linalg.lstsq(W0, t, rcond=None)[0]
    D = np.diag((t > 0).astype(float))
    d = np.linalg.svd(W1 @ D @ W0)[2][0]
    h = 1e-6
    q = np.linalg.norm(mnist_net.forward(x + h * d) - mnist_net.forward(x)) / h
    assert q == pytest.approx(MNIST_TRUE_QUOTIENT, rel=1e-5)


# --- soundness properties ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act", ["relu", "tanh", "leaky_relu", "gelu"])
def test_lower_le_bound_le_naive(seed, act):
    rng = np.random.default_rng(seed)
    dims = [int(rng.integers(2, 6))] + [int(rng.integers(3, 9)) for _ in range(int(rng.integers(1, 4)))] + [int(rng.integers(1, 4))]
    net = mlp(rng, dims, act)
    cert = lipsdp.certify(net)
    assert cert.verified
    assert cert.lower_bound is not None
    assert cert.lower_bound <= cert.bound
    assert cert.bound <= cert.naive_bound * (1 + 1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_one_layer_network_gives_spectral_norm(seed):
    W = np.random.default_rng(seed).normal(size=(4, 6))
    cert = lipsdp.certify(Network([Affine(W)]))
    assert cert.verified
    assert cert.bound == pytest.approx(np.linalg.norm(W, 2), rel=1e-9)
    assert cert.bound >= np.linalg.norm(W, 2)


def test_check_never_certifies_below_the_true_constant(random_net):
    """Arbitrary (even bad) multipliers: the check's ρ is valid, so sqrt(ρ) ≥ the exact constant."""
    qcs = [constraint_for(a) for a in random_net.activations]
    rng = np.random.default_rng(0)
    for _ in range(5):
        vals = [{"lambda": rng.uniform(0.5, 5.0, size=qc.n)} for qc in qcs]
        res = check_feedforward(random_net.weights, qcs, vals)
        if res.verified:
            assert np.sqrt(res.rho) >= RANDOM_NEURON * (1 - 1e-9)


def test_check_rejects_invalid_multipliers(random_net):
    qcs = [constraint_for(a) for a in random_net.activations]
    vals = [{"lambda": np.zeros(qc.n)} for qc in qcs]  # T = 0: the hidden block is W^T W ⪰ 0
    res = check_feedforward(random_net.weights, qcs, vals)
    assert not res.verified
    assert "not negative definite" in res.message


def test_low_accuracy_solver_is_never_reported_below_truth(random_net):
    """SCS at a loose tolerance returned 36.2348 < 36.48223 (reference-values.md): the checked
    bound must still be above the exact constant."""
    cert = lipsdp.certify(random_net, solver="scs", tol=1e-3, lower=False)
    if cert.verified:
        assert cert.bound >= RANDOM_NEURON * (1 - 1e-9)


def test_network_multipliers_refused(random_net):
    with pytest.raises(errors.FormulationError, match="not a valid quadratic constraint"):
        lipsdp.certify(random_net, method="network")


def test_unknown_method():
    with pytest.raises(errors.FormulationError, match="valid"):
        lipsdp.certify(mlp(np.random.default_rng(0), [2, 3, 1]), method="bogus")


# --- QC generators ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "act",
    [SlopeRestricted("leaky_relu", params={"negative_slope": 0.1}), SlopeRestricted("sigmoid"), GroupSort(3),
     Householder(np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.0]]))],
)
@pytest.mark.parametrize("variant", ["neuron", "layer"])
def test_qc_terms_match_paper_formula(act, variant):
    qc = constraint_for(act.with_size(6), variant)
    rng = np.random.default_rng(1)
    vals = {p.name: rng.normal(size=p.size) for p in qc.params()}
    np.testing.assert_allclose(qc.matrix(vals), qc.matrix_from_terms(vals), atol=1e-12)


def test_qc_is_valid_on_samples():
    """[Δv; Δφ]^T Q [Δv; Δφ] ≥ 0 for admissible multipliers on random pairs, every family."""
    rng = np.random.default_rng(2)
    for act in [SlopeRestricted("tanh"), SlopeRestricted("silu"), GroupSort(2), GroupSort(4),
                Householder(rng.normal(size=(2, 4)))]:
        act = act.with_size(8)
        qc = constraint_for(act)
        for _ in range(50):
            vals = qc.project({p.name: rng.normal(size=p.size) * 3 for p in qc.params()})
            v, w = rng.normal(size=8) * 2, rng.normal(size=8) * 2
            z = np.concatenate([v - w, act.forward(v) - act.forward(w)])
            assert z @ qc.matrix(vals) @ z >= -1e-9


def test_register_constraint():
    class Custom(QuadraticConstraint):
        VARIANTS = {"neuron": "test"}

    register_constraint("custom-test", Custom)
    try:
        assert QC_REGISTRY["custom-test"] is Custom
    finally:
        del QC_REGISTRY["custom-test"]
    with pytest.raises(TypeError):
        register_constraint("bad", object)


# --- backends: one known-answer bank for every installed backend ---------------------------

BANK_BACKENDS = [name for name in REGISTRY if name != "mosek"]


@pytest.mark.parametrize("solver", BANK_BACKENDS)
def test_backend_known_answer_bank(solver, random_net):
    if solver not in installed_backends():
        pytest.skip(f"{solver} is not installed here")
    rng = np.random.default_rng(5)
    W = rng.normal(size=(3, 4))
    one = lipsdp.certify(Network([Affine(W)]), solver=solver, lower=False)
    assert one.bound == pytest.approx(np.linalg.norm(W, 2), rel=1e-8)
    neuron = lipsdp.certify(random_net, solver=solver, lower=False)
    layer = lipsdp.certify(random_net, method="layer", solver=solver, lower=False)
    assert neuron.verified and layer.verified
    assert neuron.solver == solver
    assert RANDOM_NEURON * (1 - 1e-6) <= neuron.bound <= RANDOM_NEURON * (1 + 1e-4)
    assert RANDOM_LAYER * (1 - 1e-6) <= layer.bound <= RANDOM_LAYER * (1 + 1e-4)


def _mosek_usable():
    return REGISTRY["mosek"].availability()


@pytest.mark.requires_mosek
def test_mosek_backend(random_net):
    ok, why = _mosek_usable()
    if not ok:
        pytest.skip(f"MOSEK not usable here: {why}")
    cert = lipsdp.certify(random_net, solver="mosek", lower=False)
    assert cert.verified and cert.bound == pytest.approx(RANDOM_NEURON, rel=1e-5)


def test_mosek_without_licence_is_a_clear_error(random_net):
    ok, why = _mosek_usable()
    if ok:
        pytest.skip("MOSEK is licensed here: the no-licence path cannot be exercised")
    with pytest.raises(errors.SolverNotAvailableError, match="MOSEK|mosek"):
        lipsdp.certify(random_net, solver="mosek")


def test_unknown_solver():
    with pytest.raises(errors.SolverError, match="unknown solver 'nope'"):
        get_backend("nope")


def test_auto_solver_choice_is_recorded(random_net):
    cert = lipsdp.certify(random_net, lower=False)
    assert cert.solver in installed_backends()


# --- input errors ----------------------------------------------------------------------------


def test_nan_weights():
    with pytest.raises(errors.InvalidNetworkError, match="NaN"):
        Network([Affine(np.array([[1.0, np.nan]]))])


def test_shape_mismatch_names_layer():
    with pytest.raises(errors.InvalidNetworkError, match="fc2"):
        Network([Affine(np.ones((3, 2)), name="fc1"), SlopeRestricted("relu"), Affine(np.ones((1, 4)), name="fc2")])


def test_empty_network():
    with pytest.raises(errors.InvalidNetworkError, match="empty"):
        Network([])


def test_alpha_gt_beta():
    with pytest.raises(errors.InvalidNetworkError, match="alpha <= beta"):
        Network([Affine(np.ones((2, 2))), SlopeRestricted("relu", alpha=1.0, beta=0.0), Affine(np.ones((1, 2)))])


def test_bad_model_type():
    with pytest.raises(errors.InvalidNetworkError, match="cannot certify"):
        lipsdp.certify(42)


def test_bad_norm():
    with pytest.raises(errors.FormulationError, match="unknown norm"):
        lipsdp.certify(mlp(np.random.default_rng(0), [2, 2, 1]), norm="l7")


def test_certificate_json_round_trip(random_net):
    cert = lipsdp.certify(random_net, lower=True)
    d = json.loads(cert.to_json())
    for key in ("bound", "naive_bound", "norm", "method", "solver", "status", "verified", "margin", "timings", "sizes",
                "lower_bound"):
        assert key in d
    assert d["timings"]["build"] >= 0 and d["timings"]["solve"] > 0 and d["timings"]["check"] > 0
    assert d["verified"] is True
    assert "certified bound" in str(cert)


# --- CLI -------------------------------------------------------------------------------------


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lipsdp", *args], capture_output=True, text=True, timeout=300)


def test_cli_certify_json(tmp_path):
    out = tmp_path / "cert.json"
    p = run_cli("certify", str(require(LIPSDP / "random_weights.mat")), "--json", "--out", str(out))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["verified"] and d["bound"] == pytest.approx(RANDOM_NEURON, rel=2e-6)
    assert json.loads(out.read_text())["bound"] == d["bound"]


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["certify", "/nonexistent/file.mat"], "no such file"),
        (["certify", "{random}", "--solver", "nope"], "unknown solver"),
        (["certify", "{random}", "--method", "network"], "not a valid quadratic constraint"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, pattern):
    args = [a.replace("{random}", str(require(LIPSDP / "random_weights.mat"))) for a in args]
    out = tmp_path / "never.json"
    p = run_cli(*args, "--out", str(out))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert pattern in p.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_demo():
    p = run_cli("demo")
    assert p.returncode == 0, p.stderr
    assert "certified bound" in p.stdout and "verified" in p.stdout


def test_auto_falls_back_when_first_solver_fails():
    """CVXOPT (auto's choice for tiny LMIs) returns no point on the P-free NSR problem of one
    MaxMin; auto must hand over to another solver and still certify exactly 1 (math.md §4)."""
    net = lipsdp.from_weights([np.eye(2), np.eye(2)], activation="maxmin")
    cert = lipsdp.certify(net, lower=False)
    assert cert.verified
    assert 1.0 <= cert.bound <= 1.0 + 1e-6


def test_banded_factorisation_agrees_with_dense():
    """lipsdp.check._spd_factor uses LAPACK's banded Cholesky for block-tridiagonal matrices:
    same accept / reject decisions and the same solves as the dense factorisation."""
    from lipsdp.check import _bandwidth, _spd_factor, _spd_solve

    rng = np.random.default_rng(11)
    n, b = 600, 20
    for shift in (1.0, -1.0):
        L = np.tril(rng.standard_normal((n, n)))
        L = np.triu(L, -b)  # lower band b → A = L L^T has bandwidth b
        A = L @ L.T + shift * 0.5 * np.eye(n)
        if shift < 0:
            A[n // 2, n // 2] = -1.0  # certainly not positive definite
        assert _bandwidth(A) == b
        fac = _spd_factor(A)
        dense_ok = True
        try:
            np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            dense_ok = False
        assert (fac is not None) == dense_ok
        if fac is not None:
            assert fac[0] == "band"
            B = rng.standard_normal((n, 3))
            np.testing.assert_allclose(A @ _spd_solve(fac, B), B, atol=1e-8)


def test_sparse_check_agrees_with_dense(monkeypatch):
    """Above check.SPARSE_ORDER, check_feedforward assembles M in sparse storage and proves it on the
    band: same ρ_min, same δ margin, same verdict as the dense check, for a solver point and for
    multipliers that are too small (rejected by both)."""
    import lipsdp.check as chk

    rng = np.random.default_rng(5)
    dims = [4] + [30] * 12 + [1]
    Ws = [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
    net = lipsdp.from_weights(Ws, activation="relu")
    form = formulation_for(net, "l2", "neuron")
    res = get_backend("native").solve(form.problem(), SolveOptions())
    rec = form.recover(form.problem(), res.theta)
    dense = form.check(rec)
    monkeypatch.setattr(chk, "SPARSE_ORDER", 0)
    sparse = form.check(rec)
    assert dense.verified and sparse.verified
    assert sparse.rho_min == pytest.approx(dense.rho_min, rel=1e-12)
    assert sparse.rho == pytest.approx(dense.rho, rel=1e-12)
    assert sparse.margin == pytest.approx(dense.margin, rel=1e-9)
    # multipliers scaled down 100×: the hidden block is no longer negative definite for either
    small = type(rec)([{k: v / 100 for k, v in d.items()} for d in rec.layers], rec.rho_solver)
    assert not form.check(small).verified
    monkeypatch.setattr(chk, "SPARSE_ORDER", 10 ** 9)
    assert not form.check(small).verified
