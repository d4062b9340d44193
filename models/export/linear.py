"""Exact linear maps of torch operations on one sample, and the IR layers that hold them.

Every linear layer the exporter emits is an :class:`ir.Affine` holding a
:class:`lipsdp.linop.LinearOp` (:func:`affine`): convolutions stay :class:`~lipsdp.linop.Conv`
operators (torch_ops.conv_operator), padding, pooling, permutations and diagonal scalings are
:class:`~lipsdp.linop.Sparse`, Linear weights :class:`~lipsdp.linop.Dense`.  Maps without a
closed form are found by :func:`linear_map`: unit samples pushed through the torch function in
float64 (column j is the function applied to the j-th unit sample, so the entries are exactly
what ``forward`` computes for that sample).  Everything flattens in PyTorch's C order
(channels, then rows, then columns).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from lipsdp import ir
from lipsdp.errors import InvalidNetworkError
from lipsdp.linop import Conv, Sparse, as_linop, compose

#: number of unit samples pushed through a function at once (bounds the memory of
#: :func:`linear_map` for large inputs)
CHUNK = 1024


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def numel(shape: tuple) -> int:
    return int(math.prod(shape))


def linear_map(fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple, sparse: bool = False):
    """The matrix W of a linear map on per-sample tensors of ``shape``: W x_flat = fn(x)_flat.

    ``fn`` receives a batch of unit samples (float64) and must be linear.  Returns
    ``(W, out_shape)``; W is a dense array, or a CSR matrix (built chunk by chunk) when
    ``sparse``.
    """
    n = numel(shape)
    blocks, out_shape = [], None
    with torch.no_grad():
        for start in range(0, n, CHUNK if sparse else n):
            stop = min(n, start + (CHUNK if sparse else n))
            basis = torch.zeros((stop - start, n), dtype=torch.float64)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            out = fn(basis.reshape((stop - start,) + tuple(shape)))
            out_shape = tuple(int(s) for s in out.shape[1:])
            cols = f64(out.reshape(stop - start, -1)).T
            blocks.append(sp.csr_matrix(cols) if sparse else cols)
    if sparse:
        return sp.hstack(blocks, format="csr"), out_shape
    return blocks[0], out_shape


def selection_map(fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple) -> tuple[sp.csr_matrix, tuple]:
    """The 0/1 matrix of a map whose every output is one input or 0 (padding of any mode, crops):
    the indices 1..n pushed through ``fn`` (exact below 2**53) say which input each output copies."""
    n = numel(shape)
    with torch.no_grad():
        out = fn(torch.arange(1, n + 1, dtype=torch.float64).reshape((1,) + tuple(shape)))
    out_shape = tuple(int(s) for s in out.shape[1:])
    src = out.reshape(-1).numpy()
    rows = np.flatnonzero(src)
    cols = src[rows].astype(np.int64) - 1
    if not np.array_equal(cols + 1, src[rows]) or np.any(cols < 0) or np.any(cols >= n):  # pragma: no cover
        raise InvalidNetworkError("selection_map: the function does not copy its inputs")
    return sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(src.size, n)), out_shape


class ZeroPad(Sparse):
    """Zero padding of a (C, *spatial) sample as a 0/1 sparse map, remembering its widths
    (``pads``: one (before, after) pair per spatial dimension) so that a convolution right after
    it can absorb it (:func:`fold_pad`)."""

    def __init__(self, matrix, in_shape: tuple, pads: tuple):
        super().__init__(matrix)
        self.in_shape, self.pads = tuple(in_shape), tuple(pads)


class ChannelScale(Sparse):
    """x -> diag(s_c) x on a (C, *spatial) sample (BatchNorm's scale, ``c * x``) as a sparse
    diagonal, remembering the per-channel factors so that a convolution right before it can absorb
    it (:func:`fold`)."""

    def __init__(self, scale, shape: tuple):
        scale = np.asarray(scale, dtype=np.float64).ravel()
        super().__init__(sp.diags(np.repeat(scale, numel(shape[1:]))).tocsr())
        self.channel_scale = scale


def fold(first: ir.Affine, second: ir.Affine) -> ir.Affine | None:
    """Two consecutive affine layers as one that keeps a convolution a :class:`Conv` (the same map):

    * a bias-free :class:`ZeroPad` then a Conv: the padding is added to the Conv's own;
    * a Conv then a :class:`ChannelScale` (BatchNorm, ``c * conv(x)``): the kernel's output
      channels are scaled, and the bias becomes s ⊙ b₁ + b₂.

    None when the pair is neither."""
    if not (isinstance(first, ir.Affine) and isinstance(second, ir.Affine)):
        return None
    name = "+".join(n for n in (first.name, second.name) if n)
    A, B = first.op, second.op
    if isinstance(A, ZeroPad) and first.bias is None and isinstance(B, Conv) and len(A.pads) == len(B.padding) \
            and A.shape[0] == B.shape[1]:
        padding = tuple((a + c, b + d) for (a, b), (c, d) in zip(A.pads, B.padding))
        return ir.Affine(Conv(B.kernel, A.in_shape, B.stride, padding, B.dilation, B.groups), second.bias, name)
    if isinstance(A, Conv) and isinstance(B, ChannelScale) and B.channel_scale.size == A.kernel.shape[0]:
        s = B.channel_scale
        kernel = A.kernel * s.reshape((-1,) + (1,) * (A.kernel.ndim - 1))
        scale = np.repeat(s, A.shape[0] // s.size)
        bias = None
        if first.bias is not None or second.bias is not None:
            bias = (scale * first.bias if first.bias is not None else 0.0) + \
                (second.bias if second.bias is not None else 0.0)
        return ir.Affine(Conv(kernel, A.in_shape, A.stride, A.padding, A.dilation, A.groups), bias, name)
    return None


def affine(weight, bias=None, name: str = "") -> ir.Affine:
    """The IR layer x -> W x + b (W a LinearOp, a dense array or a scipy sparse matrix)."""
    return ir.Affine(as_linop(weight), bias, name)


def scaled(layer: ir.Affine, s: float) -> ir.Affine:
    """s · (W x + b)."""
    return ir.Affine(layer.op.scaled(s), None if layer.bias is None else s * layer.bias, layer.name)


def scalar_of(layer: ir.Affine) -> float | None:
    """c when the layer's weight is c·I, else None."""
    n, m = layer.op.shape
    if n != m:
        return None
    S = layer.op.to_sparse().tocoo()
    if S.nnz != n or not np.array_equal(S.row, S.col) or not np.all(S.data == S.data[0]):
        return None
    return float(S.data[0])


def permutation(perm: np.ndarray) -> sp.csr_matrix:
    """P with (P z)[i] = z[perm[i]]."""
    n = perm.size
    return sp.csr_matrix((np.ones(n), (np.arange(n), perm)), shape=(n, n))


def channel_groups(shape: tuple, group_size: int, what: str) -> np.ndarray:
    """Flat indices, ordered so that every ``group_size`` consecutive entries form one group of
    consecutive channels (dimension 0 of ``shape``) at one spatial position."""
    channels = shape[0]
    if channels % group_size:
        raise InvalidNetworkError(
            f"{what}: {channels} channels cannot be split into groups of {group_size} (input shape {shape})"
        )
    idx = np.arange(numel(shape)).reshape(shape)
    return np.moveaxis(idx.reshape((channels // group_size, group_size) + tuple(shape[1:])), 1, -1).ravel()


def grouped(activation: ir.Activation, perm: np.ndarray, perm_out: np.ndarray | None = None,
            scale: float = 1.0) -> list:
    """[P_in, activation, scale · P_outᵀ]: the IR activation (contiguous groups) conjugated by
    the permutations that bring the module's groups next to each other.  Identity maps are left
    out (the IR merges the others into the neighbouring affine layers)."""
    perm_out = perm if perm_out is None else perm_out
    layers = []
    identity = np.arange(perm.size)
    if not np.array_equal(perm, identity):
        layers.append(affine(permutation(perm)))
    layers.append(activation)
    if scale != 1.0 or not np.array_equal(perm_out, identity):
        layers.append(affine(scale * permutation(perm_out).T))
    return layers


def merge_affines(layers) -> list:
    """Merge consecutive Affine layers: W2 (W1 x + b1) + b2."""
    out: list = []
    for layer in layers:
        if isinstance(layer, ir.Affine) and out and isinstance(out[-1], ir.Affine):
            prev = out.pop()
            bias = None
            if prev.bias is not None or layer.bias is not None:
                b1 = prev.bias if prev.bias is not None else np.zeros(prev.out_dim)
                bias = layer.op.matvec(b1) + (layer.bias if layer.bias is not None else 0.0)
            layer = ir.Affine(compose(layer.op, prev.op), bias, "+".join(n for n in (prev.name, layer.name) if n))
        out.append(layer)
    return out


def identity(n: int, name: str = "identity") -> ir.Affine:
    return affine(sp.identity(n, format="csr"), name=name)
