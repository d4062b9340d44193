"""The sparse rounding-safe PSD proof (lipsdp.check_sparse; issue 15 item 4, math.md §9)."""

import numpy as np
import pytest
import scipy.sparse as sp

import lipsdp
import lipsdp.check as chk
import lipsdp.check_sparse as chs
from lipsdp.backends import SolveOptions, get_backend
from lipsdp.check import psd_proof
from lipsdp.check_sparse import sparse_psd_proof
from lipsdp.formulations import formulation_for
from lipsdp.linop import Conv


def conv_matrix(cin, h, w, cout, k, s, p, rng):
    """Sparse (cout·ho·wo) × (cin·h·w) matrix of a random 2-D convolution (lipsdp.linop.Conv), its output shape."""
    op = Conv(rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k), (cin, h, w), stride=s, padding=p)
    return op.to_sparse(), op.out_shape


def random_spd(n, density, rng):
    """Sparse A = R Rᵀ (R sparse, unit diagonal plus random entries), exactly symmetric."""
    R = sp.random(n, n, density=density, random_state=np.random.RandomState(rng.integers(1 << 31)))
    R = (R + sp.identity(n)).tocsr()
    A = (R @ R.T).tocsr()
    return ((A + A.T) * 0.5).tocsr()


def shifted(A, t):
    """A − (λ_min(A) − t)·I: smallest eigenvalue t (up to eigvalsh's rounding, ~1e-15·‖A‖)."""
    lam = float(np.linalg.eigvalsh(A.toarray())[0])
    return (A - (lam - t) * sp.identity(A.shape[0])).tocsr()


ENGINES = list(chs.ENGINES)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("t", [1e-1, 1e-7, -1e-7, -1e-1])
def test_agrees_with_dense_proof(t, engine):
    """Same verdict as the dense psd_proof on random sparse SPD matrices, near-singular ones
    (λ_min = 1e-7, far above δ ≈ 1e-11 here but far below ‖A‖) and indefinite ones."""
    rng = np.random.default_rng(3)
    for n, dens in ((200, 0.02), (400, 0.005)):
        A = shifted(random_spd(n, dens, rng), t)
        dense_ok, dense_delta = psd_proof(A.toarray(), np.abs(A.toarray()), 1)
        ok, delta = sparse_psd_proof(A, abs(A), 1, engine=engine)
        assert ok == dense_ok == (t > 0)
        assert 0 < delta <= 1.01 * dense_delta  # k ≤ n + 3: never a larger margin than the dense one


@pytest.mark.parametrize("engine", ENGINES)
def test_rejects_indefinite_by_a_hair(engine):
    """λ_min = −1e-9·‖A‖ (a matrix perturbed just past singular) is rejected; λ_min = +1e-6 accepted."""
    rng = np.random.default_rng(8)
    A = random_spd(600, 0.004, rng)
    norm = float(np.linalg.eigvalsh(A.toarray())[-1])
    assert not sparse_psd_proof(shifted(A, -1e-9 * norm), abs(A), 1, engine=engine)[0]
    assert sparse_psd_proof(shifted(A, 1e-6 * norm), abs(A), 1, engine=engine)[0]


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="qdldl"):
        sparse_psd_proof(sp.identity(3), sp.identity(3), 1, engine="nope")
    A = sp.identity(5, format="csr")
    bad = A.copy()
    bad[2, 2] = -1.0
    assert not sparse_psd_proof(bad, abs(bad), 1)[0]
    bad = A.copy()
    bad[1, 1] = np.nan
    assert not sparse_psd_proof(bad, abs(bad), 1)[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_tighter_k_is_used_when_the_first_margin_fails(engine):
    """tridiag(−1, 2, −1) − (λ₁ − t)·I of order 3000 (λ₁ = 2 − 2cos(π/(n+1)), so λ_min = t): with
    t = 1e-10 the margin with k = n + 3 (≈ 4e-9) is too large, the structural row count of L̂
    (c = 2, k = 5: δ ≈ 7e-12) proves it; the dense proof (k = n + 1) cannot.  t = −1e-10: rejected."""
    n = 3000
    lam1 = 2 - 2 * np.cos(np.pi / (n + 1))
    for t, expect in ((1e-10, True), (-1e-10, False)):
        A = sp.diags([np.full(n - 1, -1.0), np.full(n, 2.0 - (lam1 - t)), np.full(n - 1, -1.0)], [-1, 0, 1],
                     format="csr")
        ok, delta = sparse_psd_proof(A, abs(A), 1, engine=engine)
        assert ok == expect
        if expect:
            g = chk._gamma(n + 3)
            assert delta < 2 * g / (1 - g) * float(A.diagonal().sum()) / 100  # k = c + 3 was used
            assert not psd_proof(A.toarray(), np.abs(A.toarray()), 1)[0]


def test_tighter_k_skipped_above_count_max_order(monkeypatch):
    """Above COUNT_MAX_ORDER only k = n + 3 is tried (no copy of the factor): the matrix of the test
    above, provable only with the tighter margin, is then (soundly) not proved."""
    monkeypatch.setattr(chs, "COUNT_MAX_ORDER", 100)
    n = 3000
    lam1 = 2 - 2 * np.cos(np.pi / (n + 1))
    A = sp.diags([np.full(n - 1, -1.0), np.full(n, 2.0 - (lam1 - 1e-10)), np.full(n - 1, -1.0)], [-1, 0, 1],
                 format="csr")
    assert not sparse_psd_proof(A, abs(A), 1)[0]


def _solved(Ws, activation="relu"):
    net = lipsdp.from_weights(Ws, activation=activation)
    form = formulation_for(net, "l2", "neuron")
    res = get_backend("native").solve(form.problem(), SolveOptions())
    return form, form.recover(form.problem(), res.theta)


def _small_cnn(rng):
    W0, shp = conv_matrix(1, 5, 5, 3, 3, 1, 1, rng)  # 25 → 75
    W1, shp = conv_matrix(*shp, 3, 3, 2, 1, rng)  # 75 → 27
    W2 = rng.standard_normal((5, W1.shape[0])) / 5
    return [W0.toarray(), W1.toarray(), W2]


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_check_routes_to_sparse_proof_and_agrees(monkeypatch, which):
    """check_feedforward with the LMI in sparse storage and the sparse LDLᵀ proof: the solver's
    certificate is accepted with the dense check's ρ (same ρ_min; the proof passes at the same
    step), and multipliers scaled down 100× (infeasible) are rejected by both."""
    rng = np.random.default_rng(5)
    if which == "mlp":
        dims = [4] + [20] * 4 + [1]
        Ws = [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(dims[:-1], dims[1:])]
    else:
        Ws = _small_cnn(rng)
    form, rec = _solved(Ws)
    dense = form.check(rec)
    calls = []
    orig = chs.sparse_psd_proof

    def spy(*a, **k):
        calls.append(a[0].shape[0])
        return orig(*a, **k)

    monkeypatch.setattr(chk, "SPARSE_ORDER", 0)
    monkeypatch.setattr(chk, "SPARSE_PROOF_ORDER", 0)
    monkeypatch.setattr(chs, "band_wins", lambda A: None)
    monkeypatch.setattr(chs, "sparse_psd_proof", spy)
    sparse = form.check(rec)
    assert calls, "psd_proof did not route the sparse LMI to sparse_psd_proof"
    assert dense.verified and sparse.verified
    assert sparse.rho_min == pytest.approx(dense.rho_min, rel=1e-9)
    assert sparse.rho == pytest.approx(dense.rho, rel=1e-9)
    small = type(rec)([{k: v / 100 for k, v in d.items()} for d in rec.layers], rec.rho_solver)
    assert not form.check(small).verified
    monkeypatch.setattr(chk, "SPARSE_ORDER", 10 ** 9)
    assert not form.check(small).verified


def test_sparse_solver_for_the_schur_complement(monkeypatch):
    """Above DENSE_FACTOR_ORDER, _spd_factor factors a wide-band sparse matrix by a sparse
    factorisation (no dense copy): solves agree with a dense solve; an indefinite matrix gives None."""
    monkeypatch.setattr(chk, "DENSE_FACTOR_ORDER", 0)
    rng = np.random.default_rng(1)
    A = shifted(random_spd(300, 0.01, rng), 1e-2)
    fac = chk._spd_factor(A)
    assert fac is not None and fac[0] == "sparse"
    B = rng.standard_normal((300, 4))
    np.testing.assert_allclose(chk._spd_solve(fac, B), np.linalg.solve(A.toarray(), B), rtol=1e-8, atol=1e-10)
    assert chk._spd_factor(shifted(A, -1e-3)) is None


def test_band_path_kept_for_chains():
    """Block-tridiagonal (MLP-chain) matrices keep the banded Cholesky: band_wins gives an ordering."""
    rng = np.random.default_rng(2)
    blocks = [rng.standard_normal((40, 40)) for _ in range(30)]
    n = 40 * 30
    A = sp.block_diag([B @ B.T + 40 * np.eye(40) for B in blocks], format="lil")
    for k in range(29):
        A[40 * k:40 * k + 40, 40 * k + 40:40 * k + 80] = 0.1 * blocks[k]
        A[40 * k + 40:40 * k + 80, 40 * k:40 * k + 40] = 0.1 * blocks[k].T
    assert chs.band_wins(A.tocsr()) is not None
    W, _ = conv_matrix(4, 24, 24, 4, 3, 1, 1, rng)  # a conv Gram: 2-D grid couplings
    G = (W.T @ W + sp.identity(W.shape[1])).tocsr()
    assert chs.band_wins(G) is None
    assert n > 0


def test_fill_proportional_memory_on_conv_lmi():
    """On the LipSDP-shaped LMI of an all-conv net (order 5 200), the LDLᵀ factor has far fewer
    than n²/2 entries, and the proof passes."""
    import qdldl

    rng = np.random.default_rng(4)
    Ws, shp = [], (1, 20, 20)
    for _ in range(3):
        W, shp = conv_matrix(*shp, 4, 3, 1, 1, rng)
        Ws.append(W)
    dims = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    nb = len(dims)
    grid = [[None] * nb for _ in range(nb)]
    for i in range(nb):
        grid[i][i] = sp.identity(dims[i]) * 2.0
    for k in range(1, nb):  # off-diagonal blocks W^T T of the LMI, T = I
        grid[k - 1][k] = Ws[k - 1].T
        grid[k][k - 1] = Ws[k - 1]
    M = sp.bmat(grid, format="csr")
    s = float(np.max(np.asarray(abs(M).sum(axis=1)).ravel())) + 1.0
    A = (M + s * sp.identity(M.shape[0])).tocsr()  # diagonally dominant: positive definite
    n = A.shape[0]
    assert n == 5200
    L, D, _ = qdldl.Solver(sp.triu(A, format="csc")).factors()
    assert L.nnz + n < n * n / 20  # measured: 0.92 M entries, 7 % of the dense triangle
    for engine in ENGINES:
        assert sparse_psd_proof(A, abs(A), 1, engine=engine)[0]


@pytest.mark.slow
def test_mnist_2c2f_shaped_lmi():
    """Order 5 598 LMI shaped like mnist_2C2F (benchmarks/sparse_check.py, last layer lifted):
    accepted; shifted to be indefinite by 1e-6 of its Gershgorin shift: rejected."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from sparse_check import cnn_weights, lmi

    A, Aabs = lmi(cnn_weights("mnist_2C2F", np.random.default_rng(0)), lift=True)
    assert psd_proof(A, Aabs, 1568)[0]
    from scipy.sparse.linalg import eigsh

    lam = float(eigsh(A.tocsc(), k=1, sigma=0, which="LM", return_eigenvectors=False)[0])
    B = (A - (lam + 1e-6 * lam) * sp.identity(A.shape[0])).tocsr()
    assert not psd_proof(B, Aabs, 1568)[0]


def test_rcm_band_path_on_a_shuffled_chain():
    """A block-tridiagonal matrix under a random symmetric permutation (natural bandwidth ≈ n):
    psd_proof finds the band again by reverse Cuthill–McKee, gives the dense proof's verdict and δ,
    and hands ``extra`` the scaling vector in the caller's order."""
    rng = np.random.default_rng(6)
    nb, b = 40, 30
    n = nb * b
    A = np.zeros((n, n))
    for k in range(nb):
        B = rng.standard_normal((b, b))
        A[k * b:(k + 1) * b, k * b:(k + 1) * b] = B @ B.T / b + 4 * np.diag(rng.uniform(1, 8, b))
        if k:
            C = rng.standard_normal((b, b)) * 0.2
            A[k * b:(k + 1) * b, (k - 1) * b:k * b] = C
            A[(k - 1) * b:k * b, k * b:(k + 1) * b] = C.T
    p = rng.permutation(n)
    A = A[np.ix_(p, p)]
    S = sp.csr_matrix(A)
    assert chs.band_wins(S) is not None
    seen = []

    def extra(d):
        seen.append(d)
        return 0.0

    for shift in (0.0, 1e3):  # 1e3: certainly indefinite
        M = A - shift * np.eye(n)
        dense = psd_proof(M, np.abs(M), 1, extra)
        sparse = psd_proof(sp.csr_matrix(M), sp.csr_matrix(np.abs(M)), 1, extra)
        assert sparse[0] == dense[0] == (shift == 0.0)
        if shift == 0.0:
            assert sparse[1] == pytest.approx(dense[1], rel=1e-12)
            np.testing.assert_array_equal(seen[-1], seen[-2])
