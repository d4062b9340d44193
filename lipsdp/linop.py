"""Linear operators of the IR: what an :class:`~lipsdp.ir.Affine` layer multiplies by.

An affine layer x ↦ W x + b keeps W as a :class:`LinearOp` rather than a dense array, so that a
convolution stays a convolution (memory proportional to its nonzeros, never the dense unrolled
matrix).  Every stage asks the operator for what it needs:

* ``matvec`` / ``rmatvec`` — W x and W^T y (forward passes, Jacobians, lower bounds);
* ``to_sparse()`` — the exact entries as a scipy sparse matrix (SDP assembly, the check);
* ``to_dense()`` — the dense matrix, only where a dense algorithm is wanted (small layers, the
  input-SVD reduction of math.md §3, which applies to dense operators only);
* ``abs()`` — the entrywise |W| (rounding-error bounds of the check, interval propagation);
* ``norm2_estimate()`` — ‖W‖₂ to working accuracy (normalisation: any positive scale is exact,
  because the multipliers are mapped back and the check uses the original operator);
* ``norm2_upper()`` — a *rigorous* upper bound on ‖W‖₂ (error bounds that must hold).

Implementations: :class:`Dense`, :class:`Sparse` and :class:`Conv` (N-d convolution in PyTorch's
(C, *spatial) row-major flattening, any stride / zero padding / dilation / groups).  All entries
are float64 and exact copies of the given weights (no arithmetic on them), so a network built from
operators certifies the same function as the module it came from.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .errors import InvalidNetworkError

__all__ = ["LinearOp", "Dense", "Sparse", "Conv", "as_linop", "compose"]

_U = 2.0 ** -53


class LinearOp:
    """Base class: a real (out × in) matrix given by its products.  Subclasses set ``shape``."""

    shape: tuple[int, int]

    # --- to implement -------------------------------------------------------------------
    def to_sparse(self) -> sp.csr_matrix:  # pragma: no cover - overridden
        raise NotImplementedError

    # --- shared (override where a cheaper form exists) -------------------------------------
    @property
    def nnz(self) -> int:
        return int(self.to_sparse().nnz)

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """W x for x of shape (in,) or (in, k)."""
        return np.asarray(self.to_sparse() @ x)

    def rmatvec(self, y: np.ndarray) -> np.ndarray:
        """W^T y for y of shape (out,) or (out, k)."""
        return np.asarray(self.to_sparse().T @ y)

    def to_dense(self) -> np.ndarray:
        return self.to_sparse().toarray()

    def abs(self) -> "LinearOp":
        S = self.to_sparse().copy()
        S.data = np.abs(S.data)
        return Sparse(S)

    def scaled(self, s: float) -> "LinearOp":
        return Sparse(self.to_sparse() * float(s))

    def norm2_estimate(self) -> float:
        """‖W‖₂ to working accuracy (largest singular value)."""
        S = self.to_sparse()
        if S.nnz == 0:
            return 0.0
        if min(S.shape) <= 400:
            return float(np.linalg.norm(S.toarray(), 2))
        from scipy.sparse.linalg import svds

        try:
            return float(svds(S, k=1, return_singular_vectors=False, tol=1e-10)[0])
        except Exception:  # ARPACK failure: fall back on a rigorous (looser) value
            return self.norm2_upper()

    def norm2_upper(self) -> float:
        """A rigorous upper bound on ‖W‖₂: min(‖W‖_F, sqrt(‖W‖₁‖W‖_∞)), rounded upwards.

        Both are classical bounds on the spectral norm; each float sum of k non-negative terms
        is enlarged by (1 + (k + 2)u) to cover its rounding.
        """
        S = self.to_sparse()
        if S.nnz == 0:
            return 0.0
        A = abs(S)
        k = max(S.shape) + 2
        up = 1.0 + k * _U / (1 - k * _U)
        fro = math.sqrt(float((A.multiply(A)).sum()) * up) * (1 + 2 * _U)
        one = float(A.sum(axis=0).max()) * up
        inf = float(A.sum(axis=1).max()) * up
        return min(fro, math.sqrt(one * inf) * (1 + 2 * _U))

    def __repr__(self):
        return f"{type(self).__name__}({self.shape[0]}x{self.shape[1]})"


class Dense(LinearOp):
    """A dense float64 matrix (read-only copy)."""

    def __init__(self, array, what: str = "weight"):
        try:
            a = np.array(array, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidNetworkError(f"{what}: expected a numeric array, got {type(array).__name__} ({exc})") from None
        if a.ndim != 2:
            raise InvalidNetworkError(f"{what}: expected a 2-D array, got shape {a.shape}")
        if a.size == 0:
            raise InvalidNetworkError(f"{what}: is empty (shape {a.shape})")
        if not np.all(np.isfinite(a)):
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise InvalidNetworkError(f"{what}: contains {bad} NaN/Inf value(s); only finite weights can be certified")
        a.setflags(write=False)
        self.array = a
        self.shape = a.shape

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.array))

    def matvec(self, x):
        return self.array @ x

    def rmatvec(self, y):
        return self.array.T @ y

    def to_dense(self):
        return self.array

    def to_sparse(self):
        return sp.csr_matrix(self.array)

    def abs(self):
        return Dense(np.abs(self.array))

    def scaled(self, s):
        return Dense(self.array * float(s))

    def norm2_estimate(self):
        return float(np.linalg.norm(self.array, 2)) if np.any(self.array) else 0.0

    def norm2_upper(self):
        from .check import spectral_upper

        return spectral_upper(self.array)


class Sparse(LinearOp):
    """A scipy sparse matrix (CSR, float64, explicit zeros removed)."""

    def __init__(self, matrix, what: str = "weight"):
        S = sp.csr_matrix(matrix, dtype=np.float64)
        if S.shape[0] == 0 or S.shape[1] == 0:
            raise InvalidNetworkError(f"{what}: is empty (shape {S.shape})")
        if not np.all(np.isfinite(S.data)):
            raise InvalidNetworkError(f"{what}: contains NaN/Inf value(s); only finite weights can be certified")
        S.eliminate_zeros()
        S.sort_indices()
        self.matrix = S
        self.shape = S.shape

    def to_sparse(self):
        return self.matrix


class Conv(LinearOp):
    """An N-d convolution (cross-correlation, as torch computes it) as a linear map of the
    flattened (C_in, *spatial) input onto the flattened (C_out, *out_spatial) output::

        y[o, p] = Σ_{c ∈ group(o), q} K[o, c − c_0(o), q] · x_pad[c, s ⊙ p + d ⊙ q]

    ``kernel`` (C_out, C_in/groups, *k); ``in_shape`` (C_in, *spatial); ``stride``, ``dilation``
    ints or one per spatial dim; ``padding`` an int, one per dim, or one (before, after) pair per
    dim (zeros).  The bias is not part of the operator.  Built exactly: :meth:`to_sparse` holds
    C_out·|out|·(C_in/groups)·|k| entries at most, never the dense matrix.
    """

    def __init__(self, kernel, in_shape, stride=1, padding=0, dilation=1, groups: int = 1):
        K = np.array(kernel, dtype=np.float64)
        if K.ndim < 3:
            raise InvalidNetworkError(f"conv kernel: expected (C_out, C_in/groups, *k), got shape {K.shape}")
        if not np.all(np.isfinite(K)):
            raise InvalidNetworkError("conv kernel: contains NaN/Inf value(s)")
        d = K.ndim - 2
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != d + 1:
            raise InvalidNetworkError(f"conv: input shape {in_shape} does not match a {d}-d kernel (expected C, {d} sizes)")
        groups = int(groups)
        c_out, c_in_g = K.shape[:2]
        if groups < 1 or c_out % groups or in_shape[0] != c_in_g * groups:
            raise InvalidNetworkError(
                f"conv: {in_shape[0]} input channels, kernel {K.shape} and groups={groups} do not fit")

        def per_dim(v, what):
            v = (v,) * d if np.isscalar(v) else tuple(v)
            if len(v) != d:
                raise InvalidNetworkError(f"conv {what}: expected {d} values, got {v}")
            return v

        stride = tuple(int(s) for s in per_dim(stride, "stride"))
        dilation = tuple(int(s) for s in per_dim(dilation, "dilation"))
        pad = per_dim(padding, "padding")
        pad = tuple((int(p), int(p)) if np.isscalar(p) else (int(p[0]), int(p[1])) for p in pad)
        out_sp = []
        for n, k, s, dl, (pb, pa) in zip(in_shape[1:], K.shape[2:], stride, dilation, pad):
            o = (n + pb + pa - dl * (k - 1) - 1) // s + 1
            if o <= 0 or s <= 0 or dl <= 0:
                raise InvalidNetworkError(f"conv: input {in_shape} is too small for kernel {K.shape[2:]} "
                                          f"(stride {stride}, padding {pad}, dilation {dilation})")
            out_sp.append(o)
        K.setflags(write=False)
        self.kernel, self.in_shape, self.stride, self.padding, self.dilation, self.groups = \
            K, in_shape, stride, pad, dilation, groups
        self.out_shape = (c_out, *out_sp)
        self.shape = (int(np.prod(self.out_shape)), int(np.prod(in_shape)))
        self._sparse = None

    def to_sparse(self):
        if self._sparse is None:
            self._sparse = self._build()
        return self._sparse

    def _build(self) -> sp.csr_matrix:
        K = self.kernel
        d = K.ndim - 2
        c_out, c_in_g = K.shape[:2]
        out_sp = self.out_shape[1:]
        in_sp = self.in_shape[1:]
        # per spatial dim: input index of (output position p, kernel offset q), and validity
        idx, ok = [], []
        for n, o, k, s, dl, (pb, _) in zip(in_sp, out_sp, K.shape[2:], self.stride, self.dilation, self.padding):
            i = s * np.arange(o)[:, None] + dl * np.arange(k)[None, :] - pb  # (o, k)
            idx.append(i)
            ok.append((i >= 0) & (i < n))
        # broadcast to (o_1..o_d, k_1..k_d)
        shape = tuple(out_sp) + tuple(K.shape[2:])
        lin_in = np.zeros(shape, dtype=np.int64)
        valid = np.ones(shape, dtype=bool)
        lin_out = np.zeros(shape, dtype=np.int64)
        for a in range(d):
            view = [1] * (2 * d)
            view[a], view[d + a] = out_sp[a], K.shape[2 + a]
            stride_in = int(np.prod(in_sp[a + 1:]))
            stride_out = int(np.prod(out_sp[a + 1:]))
            lin_in = lin_in + (np.clip(idx[a], 0, in_sp[a] - 1) * stride_in).reshape(view)
            valid = valid & ok[a].reshape(view)
            lin_out = lin_out + (np.arange(out_sp[a]) * stride_out).reshape(view[:d] + [1] * d)
        lin_in, valid, lin_out = lin_in.ravel(), valid.ravel(), np.broadcast_to(lin_out, shape).ravel()
        kpos = np.broadcast_to(np.arange(int(np.prod(K.shape[2:]))).reshape((1,) * d + K.shape[2:]), shape).ravel()
        lin_in, lin_out, kpos = lin_in[valid], lin_out[valid], kpos[valid]
        n_out_sp, n_in_sp = int(np.prod(out_sp)), int(np.prod(in_sp))
        g_out = c_out // self.groups
        rows, cols, vals = [], [], []
        Kf = K.reshape(c_out, c_in_g, -1)
        for o in range(c_out):
            c0 = (o // g_out) * c_in_g
            for c in range(c_in_g):
                w = Kf[o, c, kpos]
                nz = w != 0
                rows.append(o * n_out_sp + lin_out[nz])
                cols.append((c0 + c) * n_in_sp + lin_in[nz])
                vals.append(w[nz])
        S = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=self.shape)
        S.sum_duplicates()  # (none expected: each (row, col) pair comes from one kernel entry)
        return S

    def scaled(self, s):
        return Conv(self.kernel * float(s), self.in_shape, self.stride, self.padding, self.dilation, self.groups)

    def abs(self):
        return Conv(np.abs(self.kernel), self.in_shape, self.stride, self.padding, self.dilation, self.groups)

    def __repr__(self):
        return f"Conv({self.in_shape}->{self.out_shape}, k={self.kernel.shape[2:]}, s={self.stride})"


def as_linop(x, what: str = "weight") -> LinearOp:
    """A :class:`LinearOp` from an operator, a scipy sparse matrix or an array-like."""
    if isinstance(x, LinearOp):
        return x
    if sp.issparse(x):
        return Sparse(x, what)
    return Dense(x, what)


def compose(A: LinearOp, B: LinearOp) -> LinearOp:
    """The product A B (A after B): dense when both are dense, sparse otherwise."""
    if A.shape[1] != B.shape[0]:
        raise InvalidNetworkError(f"cannot compose a {A.shape} operator after a {B.shape} one")
    if isinstance(A, Dense) and isinstance(B, Dense):
        return Dense(A.array @ B.array)
    if isinstance(A, Dense):
        return Dense(np.asarray((B.to_sparse().T @ A.array.T).T))
    if isinstance(B, Dense):
        return Dense(np.asarray(A.to_sparse() @ B.array))
    return Sparse(A.to_sparse() @ B.to_sparse())
