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
in torch, so they are simply not in w_o (torch's own pooling decides the windows: unit samples
pushed through it give the window membership, so padding, dilation and ``ceil_mode`` follow
torch exactly).  **Remark.** For non-overlapping windows of equal size k that cover the input
(e.g. a 2×2 max-pool of stride 2 on an even grid), D is a permutation and S has orthonormal
rows, so ‖S‖·1·‖D‖ = 1 and a single max-pool certifies exactly 1 in ℓ2 (its true constant).
The QC couples D and S with the layers around the pool, so the bound is no worse, and usually
better, than the product of bounds of the parts before and after a pool treated as an opaque
1-Lipschitz map.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from lipsdp import ir
from lipsdp.errors import UnsupportedLayerError

from .linear import affine, linear_map, numel


def windows(pool, shape: tuple) -> tuple[sp.csr_matrix, tuple]:
    """0/1 membership matrix (outputs × inputs) of a max-pooling function, and its output
    shape: input j is in window o iff pooling the j-th unit sample gives 1 at o (padded cells
    are −∞ and unit samples are ≥ 0, so each window's maximum is 1 exactly when it holds j)."""
    member, out_shape = linear_map(pool, shape, sparse=True)
    member.data = (member.data == 1.0).astype(np.float64)  # a window all in the padding gives -inf
    member.eliminate_zeros()
    return member.tocsr(), out_shape


def maxpool_layers(pool, shape: tuple) -> tuple[list, tuple]:
    """[Affine(D), GroupSort(k), Affine(S)] for a max-pooling function (see the module doc)."""
    member, out_shape = windows(pool, shape)
    sizes = np.diff(member.indptr)
    if np.any(sizes == 0):
        raise UnsupportedLayerError("a max-pooling window lies entirely in the padding (its output is -inf)")
    k = int(sizes.max())
    n_out = member.shape[0]
    if k == 1:  # every window is one entry: a selection
        return [affine(member)], out_shape
    cols = np.empty((n_out, k), dtype=np.int64)
    for o in range(n_out):
        w = member.indices[member.indptr[o]:member.indptr[o + 1]]
        cols[o, :w.size] = w
        cols[o, w.size:] = w[0]  # repeat an entry of the window: the maximum is unchanged
    D = sp.csr_matrix((np.ones(n_out * k), (np.arange(n_out * k), cols.ravel())), shape=(n_out * k, numel(shape)))
    S = sp.csr_matrix((np.ones(n_out), (np.arange(n_out), np.arange(n_out) * k)), shape=(n_out, n_out * k))
    return [affine(D, name="maxpool-gather"), ir.GroupSort(k), affine(S, name="maxpool-select")], out_shape


def no_indices(kwargs: dict, args: tuple = (), position: int | None = None):
    if kwargs.get("return_indices") or (position is not None and len(args) > position and args[position]):
        raise UnsupportedLayerError("max pooling with return_indices=True returns indices, which are not a Lipschitz map")


def torch_maxpool(fn):
    """Function converter for F.max_pool1d/2d and F.adaptive_max_pool1d/2d."""
    index_position = 5 if fn in (torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d) else 1

    def convert(shape, *args, **kwargs):
        no_indices(kwargs, args, index_position)
        return maxpool_layers(lambda t: fn(t, *args, **kwargs), shape)

    return convert


def module_maxpool(m, shape):
    """Module converter for MaxPool1d/2d and AdaptiveMaxPool1d/2d."""
    if getattr(m, "return_indices", False):
        no_indices({"return_indices": True})
    return maxpool_layers(m, shape)


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
