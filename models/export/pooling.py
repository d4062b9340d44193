"""Pooling layers in the IR: average pooling as an exact linear map, max pooling through GroupSort.

**Average pooling** (AvgPool1d/2d, AdaptiveAvgPool1d/2d, global pooling) is linear: its matrix
is built by :func:`~.linear.linear_map` (unit samples pushed through torch's own pooling, so
``count_include_pad``, ``ceil_mode`` and ``divisor_override`` are exactly torch's).

**Max pooling** (MaxPool1d/2d, AdaptiveMaxPool1d/2d, ``F.max_pool*``) is not elementwise
slope-restricted, but every window's maximum is the first output of a descending sort of that
window.  Let window o hold the input indices w_o (|w_o| ≤ k, k the largest window).  Define

* D ∈ {0, 1}^{(n_out·k) × n_in}, the *window gather*: rows o·k … o·k + k − 1 copy the entries of
  w_o (a window with fewer than k entries repeats its first entry; overlapping windows copy
  shared inputs into several rows);
* S ∈ {0, 1}^{n_out × (n_out·k)}, selecting row o·k (the first entry of group o).

Then for every input v

    MaxPool(v)_o = max_{i ∈ w_o} v_i = e_1ᵀ sort↓((D v)_{group o}) = (S · GroupSort_k(D v))_o,

because repeating an entry of a window does not change its maximum.  The pool is exported as
Affine(D) → GroupSort(k) → Affine(S), the same function, and the affine maps merge with their
neighbours.  **Soundness.** The GroupSort quadratic constraint of math.md §4,

    [Δu; Δφ]ᵀ [[T − 2S', P + S'], [P + S', −T − 2P]] [Δu; Δφ] ≥ 0    (T, S', P as in §4),

holds for *every* pair of pre-activations u, u' ∈ R^{n_out·k} — in particular for u = D v,
u' = D v' — so the LMI of the lifted network (§4 Theorem 1, or §7 for residual networks) bounds
‖f(x) − f(x')‖ for the network with max pooling, which is the same map.  Padded cells are −∞
in torch, so they are simply not in w_o.  The windows are torch's: start o·s − p with k taps d
apart (cells outside the input left out), or the adaptive windows [⌊o·n/out⌋, ⌈(o+1)·n/out⌉);
the output size (``ceil_mode``) is torch's own, and the windows are compared exactly with
torch's pooling on a random sample before use.

**Remark.** For non-overlapping windows of equal size k that cover the input
(e.g. a 2×2 max-pool of stride 2 on an even grid), D is a permutation and S has orthonormal
rows, so ‖S‖·1·‖D‖ = 1 and a single max-pool certifies exactly 1 in ℓ2 (its true constant).
Beyond that, the QC couples D and S with the layers around the pool, which an opaque
1-Lipschitz pool (the product of the bounds before and after it) cannot; the tests check that
the coupled bound is the smaller one on random conv + pool nets.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from lipsdp import ir
from lipsdp.errors import UnsupportedLayerError

from .linear import affine, linear_map, numel


def _windows_1d(n: int, out: int, params: dict) -> list[np.ndarray]:
    """Input indices of each of the ``out`` windows along one dimension of size ``n``: torch's
    adaptive windows [⌊o·n/out⌋, ⌈(o+1)·n/out⌉), or start o·s − p with k taps d apart, padded
    cells (outside [0, n)) left out (they are −∞ in torch)."""
    if params["adaptive"]:
        return [np.arange((o * n) // out, -(-((o + 1) * n) // out)) for o in range(out)]
    k, s, p, d = params["kernel"], params["stride"], params["padding"], params["dilation"]
    taps = [o * s - p + d * np.arange(k) for o in range(out)]
    return [t[(t >= 0) & (t < n)] for t in taps]


def _per_dim(v, dims: int) -> tuple:
    return (v,) * dims if isinstance(v, int) else tuple(v)


def maxpool_layers(pool, shape: tuple, params: dict) -> tuple[list, tuple]:
    """[Affine(D), GroupSort(k), Affine(S)] for the max pooling ``pool`` (see the module doc).

    ``params``: ``adaptive``, or ``kernel``, ``stride``, ``padding``, ``dilation`` (per spatial
    dimension); the output size is torch's own.  The windows are checked against ``pool`` on a
    random sample before they are used (an exact comparison)."""
    spatial = tuple(shape[1:])
    dims = len(spatial)
    with torch.no_grad():
        sample = torch.randn((1,) + tuple(shape), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        want = pool(sample)
    out_shape = tuple(int(s) for s in want.shape[1:])
    per = {key: _per_dim(params[key], dims) for key in ("kernel", "stride", "padding", "dilation") if key in params}
    axes = [_windows_1d(n, o, {"adaptive": params["adaptive"], **{key: v[i] for key, v in per.items()}})
            for i, (n, o) in enumerate(zip(spatial, out_shape[1:]))]
    if any(w.size == 0 for ax in axes for w in ax):
        raise UnsupportedLayerError("a max-pooling window lies entirely in the padding (its output is -inf)")
    strides = [int(np.prod(spatial[i + 1:])) for i in range(dims)]
    windows = []  # flat spatial indices of each output position, C order
    for pos in np.ndindex(*out_shape[1:]):
        flat = np.zeros(1, dtype=np.int64)
        for i, o in enumerate(pos):
            flat = (flat[:, None] + axes[i][o][None, :] * strides[i]).ravel()
        windows.append(flat)
    k = max(w.size for w in windows)
    n_sp = int(np.prod(spatial))
    cols_sp = np.array([np.concatenate([w, np.repeat(w[:1], k - w.size)]) for w in windows])  # repeat: max unchanged
    cols = (np.arange(shape[0])[:, None, None] * n_sp + cols_sp[None]).reshape(-1, k)
    got = sample.reshape(-1).numpy()[cols].max(axis=1)
    if not np.array_equal(got, want.reshape(-1).numpy()):  # pragma: no cover - guards the window formulas
        raise UnsupportedLayerError(f"max pooling {params}: the exporter's windows do not reproduce torch's output")
    n_out = cols.shape[0]
    if k == 1:  # every window is one entry: a selection
        return [affine(sp.csr_matrix((np.ones(n_out), (np.arange(n_out), cols[:, 0])), shape=(n_out, numel(shape))))], out_shape
    D = sp.csr_matrix((np.ones(n_out * k), (np.arange(n_out * k), cols.ravel())), shape=(n_out * k, numel(shape)))
    S = sp.csr_matrix((np.ones(n_out), (np.arange(n_out), np.arange(n_out) * k)), shape=(n_out, n_out * k))
    return [affine(D, name="maxpool-gather"), ir.GroupSort(k), affine(S, name="maxpool-select")], out_shape


def no_indices(return_indices: bool):
    if return_indices:
        raise UnsupportedLayerError("max pooling with return_indices=True returns indices, which are not a Lipschitz map")


_F = torch.nn.functional


def torch_maxpool(fn):
    """Function converter for F.max_pool1d/2d and F.adaptive_max_pool1d/2d."""
    adaptive = fn in (_F.adaptive_max_pool1d, _F.adaptive_max_pool2d)
    names = ("output_size", "return_indices") if adaptive else \
        ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")

    def convert(shape, *args, **kwargs):
        bound = dict(zip(names, args), **kwargs)
        no_indices(bound.get("return_indices", False))
        params = {"adaptive": True} if adaptive else {
            "adaptive": False, "kernel": bound["kernel_size"], "stride": bound.get("stride") or bound["kernel_size"],
            "padding": bound.get("padding", 0), "dilation": bound.get("dilation", 1)}
        return maxpool_layers(lambda t: fn(t, *args, **kwargs), shape, params)

    return convert


def module_maxpool(m, shape):
    """Module converter for MaxPool1d/2d and AdaptiveMaxPool1d/2d."""
    no_indices(getattr(m, "return_indices", False))
    if isinstance(m, (torch.nn.AdaptiveMaxPool1d, torch.nn.AdaptiveMaxPool2d)):
        params = {"adaptive": True}
    else:
        params = {"adaptive": False, "kernel": m.kernel_size, "stride": m.stride or m.kernel_size,
                  "padding": m.padding, "dilation": m.dilation}
    return maxpool_layers(m, shape, params)


def module_linear(m, shape):
    """A module computing a linear map (average pooling, reflection/replication padding)."""
    W, out_shape = linear_map(m, shape, sparse=True)
    return [affine(W)], out_shape


def function_linear(fn):
    """Function converter for a linear function of its first argument (F.avg_pool2d, ...)."""

    def convert(shape, *args, **kwargs):
        W, out_shape = linear_map(lambda t: fn(t, *args, **kwargs), shape, sparse=True)
        return [affine(W)], out_shape

    return convert
