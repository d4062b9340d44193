"""Sparse PSD-proof factorisations on LipSDP-shaped LMIs of CNNs (issue 15, item 4).

Builds −M(ρ) of LipSDP-Neuron for seeded CNNs with the convolutions unrolled into sparse matrices
(block-tridiagonal in layer blocks, off-diagonal blocks W^T T), shifted to be positive definite,
and times each candidate factorisation in a fresh subprocess (peak RSS from getrusage).

    python benchmarks/sparse_check.py                 # the table (results-sparsecheck.md)
    python benchmarks/sparse_check.py --one qdldl mnist_2C2F
"""

from __future__ import annotations

import argparse
import json
import os
import gc
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp

from lipsdp.linop import Conv


def conv_matrix(cin, h, w, cout, k, s, p, rng):
    """Sparse (cout·ho·wo) × (cin·h·w) matrix of a random 2-D convolution (lipsdp.linop.Conv), its output shape."""
    op = Conv(rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k), (cin, h, w), stride=s, padding=p)
    return op.to_sparse(), op.out_shape


def cnn_weights(name, rng):
    """Seeded weight list W_0..W_l (sparse convs, dense linears) of the named architecture."""
    spec = ARCHS[name]
    c, h, w = spec["input"]
    Ws = []
    for layer in spec["layers"]:
        if layer[0] == "conv":
            _, cout, k, s, p = layer
            W, (c, h, w) = conv_matrix(c, h, w, cout, k, s, p, rng)
        else:
            _, nout = layer
            nin = c * h * w
            W = sp.csr_matrix(rng.standard_normal((nout, nin)) / np.sqrt(nin))
            c, h, w = nout, 1, 1
        Ws.append(W)
    return Ws


ARCHS = {
    # MNIST 2C2F (GLipSDP mnist_2C2F_wd shapes): 784 → 3136 → 1568 → 100 → 10, order 5 588
    "mnist_2C2F": {"input": (1, 28, 28), "layers": [("conv", 16, 4, 2, 1), ("conv", 32, 4, 2, 1), ("fc", 100), ("fc", 10)]},
    # CIFAR-10 2C2F: 3072 → 4096 → 2048 → 100 → 10, order 9 316
    "cifar_2C2F": {"input": (3, 32, 32), "layers": [("conv", 16, 4, 2, 1), ("conv", 32, 4, 2, 1), ("fc", 100), ("fc", 10)]},
    # all-conv 3×3 MNIST, 8 channels × 3 layers: order 19 600
    "mnist_allconv_8x3": {"input": (1, 28, 28), "layers": [("conv", 8, 3, 1, 1)] * 3 + [("fc", 10)]},
    # stride-2 stem then 4 × (32-channel 3×3) on 14×14: order 25 872
    "mnist_allconv_32x4": {"input": (1, 28, 28), "layers": [("conv", 32, 4, 2, 1)] + [("conv", 32, 3, 1, 1)] * 3 + [("fc", 10)]},
    # a dense MLP chain like the ECLipsE grid (depth 100 × width 80): order 8 004, block-tridiagonal
    "mlp_80x100": {"input": (4, 1, 1), "layers": [("fc", 80)] * 100 + [("fc", 1)]},
    # the issue's 16-layer × 32-channel all-conv shape on 14×14: order 101 136
    "mnist_allconv_32x16": {"input": (1, 28, 28), "layers": [("conv", 32, 4, 2, 1)] + [("conv", 32, 3, 1, 1)] * 15 + [("fc", 10)]},
}


def lmi(Ws, alpha=0.0, beta=1.0, seed=0, lift=False):
    """(A, A_abs): A = −M(ρ) + s·I of LipSDP-Neuron for slope [α, β] with random positive T_k,
    shifted by the Gershgorin bound s so that A is positive definite (structure of the real LMI:
    diagonal blocks W^T(−2αβT)W − 2T, off-diagonal blocks (α+β)W^T T, last block W_l^T W_l).

    ``lift``: the last term as a Schur complement instead of the dense W_l^T W_l block,
    [[s·I − M', W_lᵀ], [W_l, I]] ⪰ 0 ⟺ s·I − M' − W_lᵀW_l ⪰ 0 (order grows by n_out)."""
    rng = np.random.default_rng(seed)
    dims = [W.shape[1] for W in Ws]
    nb = len(dims)
    grid = [[None] * nb for _ in range(nb)]
    for i in range(nb):
        grid[i][i] = sp.csr_matrix((dims[i], dims[i]))
    for k in range(1, nb):
        W = sp.csr_matrix(Ws[k - 1])
        T = sp.diags(rng.uniform(0.5, 1.5, W.shape[0]))
        if alpha * beta != 0:
            grid[k - 1][k - 1] = grid[k - 1][k - 1] + (W.T @ T @ W) * (-2 * alpha * beta)
        grid[k - 1][k] = (W.T @ T) * (alpha + beta)
        grid[k][k - 1] = grid[k - 1][k].T
        grid[k][k] = grid[k][k] - 2 * T
    Wl = sp.csr_matrix(Ws[-1])
    if not lift:
        grid[-1][-1] = grid[-1][-1] + Wl.T @ Wl
    M = sp.bmat(grid, format="csr")
    Mabs = abs(M)
    s = float(np.max(np.asarray(Mabs.sum(axis=1)).ravel() + M.diagonal())) * 1.01
    if lift:
        s += 1.01 * float(Wl.multiply(Wl).sum())
    A = sp.identity(M.shape[0]) * s - M
    Aabs = Mabs + sp.identity(M.shape[0]) * s
    if lift:
        n, m = M.shape[0], Wl.shape[0]
        E = sp.csr_matrix((m, n - Wl.shape[1]))
        Wfull = sp.hstack([E, Wl])
        A = sp.bmat([[A, Wfull.T], [Wfull, sp.identity(m)]])
        Aabs = sp.bmat([[Aabs, abs(Wfull).T], [abs(Wfull), sp.identity(m)]])
    return A.tocsc(), Aabs.tocsc()


def fac_qdldl(A):
    import qdldl
    L, D, _ = qdldl.Solver(A).factors()
    return {"ok": bool(np.all(D > 0)), "nnz_L": int(L.nnz) + A.shape[0]}


def fac_rcm_band(A):
    import scipy.linalg as sla
    from scipy.sparse.csgraph import reverse_cuthill_mckee
    p = reverse_cuthill_mckee(sp.csr_matrix(A), symmetric_mode=True)
    B = sp.coo_matrix(A[p][:, p])
    u = int(np.max(B.col - B.row))
    n = A.shape[0]
    if (u + 1) * n * 8 > 6e9 or n * u * u / 2 > 3e11:
        return {"ok": None, "nnz_L": (u + 1) * n, "note": f"bandwidth {u}: {n * u * u / 2:.1e} flops, not run"}
    ab = np.zeros((u + 1, n))
    B = B.tocsr()
    for k in range(u + 1):
        ab[u - k, k:] = B.diagonal(k)
    sla.cholesky_banded(ab, lower=False, check_finite=False, overwrite_ab=True)
    return {"ok": True, "nnz_L": (u + 1) * n, "bandwidth": u}


def fac_cholespy(A):
    from cholespy import CholeskySolverD, MatrixType
    import torch  # cholespy takes framework tensors (imported before the clock starts, in one())
    C = sp.coo_matrix(A)
    n = A.shape[0]
    CholeskySolverD(n, torch.tensor(C.row), torch.tensor(C.col), torch.tensor(C.data), MatrixType.COO)
    return {"ok": True, "nnz_L": None}


def fac_cvxopt_cholmod(A):
    import cvxopt
    from cvxopt import cholmod
    C = sp.tril(A, format="coo")
    S = cvxopt.spmatrix(C.data, C.row.astype(int), C.col.astype(int), A.shape)
    cholmod.options["supernodal"] = 2  # LLᵀ (supernodal, BLAS-3 on the fronts)
    F = cholmod.symbolic(S, uplo="L")
    try:
        cholmod.numeric(S, F)
    except ArithmeticError:
        return {"ok": False, "nnz_L": None}
    return {"ok": True, "nnz_L": len(cholmod.getfactor(F))}  # getfactor: a copy of L (counted)


def fac_dense(A):
    import scipy.linalg as sla
    n = A.shape[0]
    if n > 12000:
        return {"ok": None, "nnz_L": n * n, "note": "dense: not run above order 12 000"}
    sla.cholesky(A.toarray(), lower=True, check_finite=False, overwrite_a=True)
    return {"ok": True, "nnz_L": n * (n + 1) // 2}


def proof_sparse(A, Aabs):
    from lipsdp.check_sparse import sparse_psd_proof
    ok, delta = sparse_psd_proof(A, Aabs, 1568)
    return {"ok": ok, "nnz_L": None, "note": f"whole proof, δ = {delta:.2g}"}


def proof_dense(A, Aabs):
    from lipsdp.check import psd_proof
    n = A.shape[0]
    if n > 12000:
        return {"ok": None, "nnz_L": None, "note": "dense: not run above order 12 000"}
    ok, delta = psd_proof(A.toarray(), Aabs.toarray(), 1568)
    return {"ok": ok, "nnz_L": None, "note": f"whole proof, δ = {delta:.2g}"}


PROOFS = {"sparse_psd_proof": proof_sparse, "dense_psd_proof": proof_dense}

CANDIDATES = {"qdldl": fac_qdldl, "cvxopt_cholmod": fac_cvxopt_cholmod, "rcm_band": fac_rcm_band, "cholespy": fac_cholespy,
              "dense": fac_dense}


def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def one(cand, arch, alpha, lift):
    A, Aabs = lmi(cnn_weights(arch, np.random.default_rng(0)), alpha=alpha, lift=lift)
    if cand == "cholespy":
        import torch  # noqa: F401  (its import is not the factorisation's cost)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS (VmHWM) to the current RSS
        f.write("5")
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    out = PROOFS[cand](A, Aabs) if cand in PROOFS else CANDIDATES[cand](A)
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _status_kb("VmHWM") / 1024
    out["base_rss_mb"] = base / 1024
    out["n"] = A.shape[0]
    out["nnz_A"] = int(A.nnz)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2, metavar=("CANDIDATE", "ARCH"))
    ap.add_argument("--alpha", type=float, default=0.0, help="slope lower bound (0: ReLU; ≠0 adds W^T T W blocks)")
    ap.add_argument("--lift", action="store_true", help="last layer as a Schur complement (no dense W_l^T W_l)")
    ap.add_argument("--archs", nargs="*", default=["mnist_2C2F", "cifar_2C2F", "mnist_allconv_8x3", "mnist_allconv_32x4"])
    ap.add_argument("--cands", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], a.alpha, a.lift)))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print("| network | α | last layer | order n | nnz(A) | candidate | seconds | nnz(L) | peak RSS MB during the factorisation (before) | note |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch in a.archs:
        for cand in a.cands:
            cmd = [sys.executable, __file__, "--one", cand, arch, "--alpha", str(a.alpha)] + (["--lift"] if a.lift else [])
            runs = []
            for _ in range(a.repeat):  # the fastest of the repeats (the machine is shared)
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
                    res = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else \
                        {"note": "failed: " + (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:80]}
                except subprocess.TimeoutExpired:
                    res = {"note": f"> {a.timeout:g} s, killed"}
                runs.append(res)
                if "seconds" not in res or res.get("ok") is None:
                    break
            res = min(runs, key=lambda r: r.get("seconds", float("inf")))
            sec = f"{res['seconds']:.2f}" if "seconds" in res and res.get("ok") is not None else "–"
            nnzl = f"{res['nnz_L']:,}" if res.get("nnz_L") else "–"
            rss = f"{res['peak_rss_mb']:.0f} ({res['base_rss_mb']:.0f})" if "peak_rss_mb" in res else "–"
            note = res.get("note", "") or (f"bandwidth {res['bandwidth']}" if "bandwidth" in res else "")
            print(f"| {arch} | {a.alpha:g} | {'lifted' if a.lift else 'W_lᵀW_l'} | {res.get('n', '')} | {res.get('nnz_A', '')} | {cand} | {sec} | {nnzl} | {rss} | {note} |",
                  flush=True)


if __name__ == "__main__":
    main()
