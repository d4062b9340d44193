"""Torch modules for the activations and architectures of LipSDP-NSR.

Pauli, Havens, Araujo, Garg, Khorrami, Allgöwer, Hu, "Novel Quadratic Constraints for Extending
LipSDP beyond Slope-Restricted Activations", ICLR 2024, arXiv 2401.14033.

Conventions (shared with :mod:`lipsdp.ir`): the activations act on dimension 1 of the input
(features of an ``(N, C)`` batch, channels of an ``(N, C, *spatial)`` batch) and split it into
*contiguous* groups: channels ``[g*i, g*(i+1))`` form group ``i`` (separately at every spatial
position).  Within a group GroupSort sorts in *descending* order, so MaxMin maps
``(a, b) -> (max(a, b), min(a, b))``.

Every module is differentiable where its function is (gradients flow for training).
:func:`lipsdp.models.from_torch` exports :class:`MaxMin` / :class:`GroupSort` to
:class:`lipsdp.ir.GroupSort`, :class:`Householder` to :class:`lipsdp.ir.Householder` and
:class:`Residual` to :class:`lipsdp.ir.Residual`; :func:`lipsdp.models.implicit_to_ir` exports an
:class:`ImplicitLayer`.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from lipsdp.errors import InvalidNetworkError, UnsupportedLayerError

__all__ = ["GroupSort", "MaxMin", "Householder", "Residual", "ImplicitLayer"]


def _split_groups(x: torch.Tensor, group_size: int, what: str) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C // g, g, *spatial), with a clear error when C % g != 0."""
    if x.dim() < 2:
        raise InvalidNetworkError(f"{what}: expected a batched input (N, C, ...), got shape {tuple(x.shape)}")
    if x.shape[1] % group_size:
        raise InvalidNetworkError(
            f"{what}: {x.shape[1]} features (dimension 1) cannot be split into groups of {group_size}; "
            "use a width that is a multiple of the group size"
        )
    return x.unflatten(1, (x.shape[1] // group_size, group_size))


class GroupSort(nn.Module):
    r"""Sort each contiguous group of ``group_size`` features in descending order.

    For input ``x`` of shape ``(N, C, *spatial)`` with ``C = G * group_size``:

        y[:, g*i : g*(i+1)] = sort_descending(x[:, g*i : g*(i+1)])      (i = 0..G-1)

    Each group map is 1-Lipschitz in ℓ2 and sum-preserving; Pauli et al., ICLR 2024, Lemma 1
    gives its quadratic constraint.  Output shape = input shape.
    """

    def __init__(self, group_size: int = 2):
        super().__init__()
        if int(group_size) != group_size or group_size < 2:
            raise InvalidNetworkError(f"GroupSort: group_size must be an integer >= 2, got {group_size!r}")
        self.group_size = int(group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = _split_groups(x, self.group_size, type(self).__name__)
        return groups.sort(dim=2, descending=True).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(GroupSort):
    r"""MaxMin on adjacent pairs: ``(x0, x1), (x2, x3), ... -> (max, min)`` per pair.

    Identical to ``GroupSort(2)`` and to :func:`lipsdp.ir.MaxMin`.  Not deel-torchlip's ``MaxMin``
    (which is ``[ReLU(x), ReLU(-x)]`` and doubles the width).  Input ``(N, 2K, *spatial)``,
    output of the same shape.  Pauli et al., ICLR 2024, §3.
    """

    def __init__(self):
        super().__init__(2)

    def extra_repr(self) -> str:
        return ""


class Householder(nn.Module):
    r"""Householder activation, per contiguous group ``z`` of ``group_size`` features:

        φ_v(z) = z                   if v^T z > 0
                 (I - 2 v v^T) z     otherwise,          v = p / ||p||_2

    1-Lipschitz and (I - v v^T) φ_v(z) = (I - v v^T) z (Pauli et al., ICLR 2024, Lemma 2).
    ``v = (1, -1)/√2`` gives :class:`MaxMin`.

    Args:
        group_size: size g of each group (ignored when ``vectors`` is given).
        vectors: initial vectors p, shape ``(g,)`` (one vector shared by every group) or
            ``(G, g)`` (one per group); normalised in forward.  Default: one shared
            ``(1, -1, 0, ..., 0)/√2`` per group (MaxMin on the first two features), repeated
            ``n_groups`` times.
        n_groups: number of distinct vectors when ``vectors`` is not given (1 = shared).
        learnable: make p an ``nn.Parameter`` (else a buffer).

    Input ``(N, C, *spatial)`` with ``C`` a multiple of g; output of the same shape.
    """

    def __init__(self, group_size: int | None = 2, vectors=None, n_groups: int = 1, learnable: bool = True):
        super().__init__()
        if vectors is None:
            if group_size is None or int(group_size) != group_size or group_size < 2:
                raise InvalidNetworkError(f"Householder: group_size must be an integer >= 2, got {group_size!r}")
            p = torch.zeros(int(n_groups), int(group_size))
            p[:, 0], p[:, 1] = 1.0 / math.sqrt(2.0), -1.0 / math.sqrt(2.0)
        else:
            p = torch.as_tensor(vectors, dtype=torch.get_default_dtype()).clone()
            if p.dim() == 1:
                p = p[None, :]
            if p.dim() != 2 or p.shape[1] < 2:
                raise InvalidNetworkError(
                    f"Householder: vectors must have shape (g,) or (groups, g) with g >= 2, got {tuple(p.shape)}"
                )
            if torch.any(torch.linalg.vector_norm(p, dim=1) == 0):
                raise InvalidNetworkError("Householder: a vector is zero; every group needs a nonzero v")
        if learnable:
            self.vectors = nn.Parameter(p)
        else:
            self.register_buffer("vectors", p)

    @property
    def group_size(self) -> int:
        return self.vectors.shape[1]

    def unit_vectors(self) -> torch.Tensor:
        """The normalised vectors v, shape (groups or 1, g)."""
        return self.vectors / torch.linalg.vector_norm(self.vectors, dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _split_groups(x, self.group_size, "Householder")  # (N, G, g, *spatial)
        v = self.unit_vectors()
        if v.shape[0] not in (1, z.shape[1]):
            raise InvalidNetworkError(
                f"Householder: {v.shape[0]} vectors for {z.shape[1]} groups; use one shared vector or one per group"
            )
        v = v.reshape(v.shape + (1,) * (z.dim() - 3))
        proj = (z * v).sum(dim=2, keepdim=True)
        return torch.where(proj > 0, z, z - 2 * proj * v).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, n_vectors={self.vectors.shape[0]}"


class Residual(nn.Module):
    r"""Residual block ``x -> x + body(x)`` (Pauli et al., ICLR 2024, Theorem 4; math.md §7).

    Exports to :class:`lipsdp.ir.Residual` when ``body`` is Linear/Conv → activation
    [→ Linear/Conv] (BatchNorm folded in).  Input and output shapes are equal.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ImplicitLayer(nn.Module):
    r"""Implicit (equilibrium) layer:  z = φ(W z + U x + b),  y = C z   (math.md §8).

    Shapes: x ``(N, in_features)``, z ``(N, hidden_features)``, y ``(N, out_features)``;
    W ``(hidden, hidden)``, U ``(hidden, in)``, b ``(hidden,)``, C ``(out, hidden)``.
    φ is :class:`MaxMin`, :class:`GroupSort` or ``nn.ReLU`` (all 1-Lipschitz), so the forward
    fixed-point iteration converges when ``||W||_2 < 1``; W starts at 0.5·(orthogonal).
    Well-posedness during training is the user's responsibility (the SDP side checks
    T − WᵀTW ≻ 0 before certifying).

    Forward: fixed-point iteration without gradient until the relative change is below ``tol``
    (a warning if ``max_iter`` is reached), then one differentiable step.  Backward uses the
    implicit function theorem: the gradient g at z solves g = ḡ + J_fᵀ g, found by the same
    iteration (Bai, Kolter, Koltun, "Deep Equilibrium Models", NeurIPS 2019).  Export with
    :func:`lipsdp.models.implicit_to_ir`; Pauli et al., ICLR 2024, §5.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int, activation: nn.Module | None = None,
                 max_iter: int = 500, tol: float = 1e-6):
        super().__init__()
        self.activation = MaxMin() if activation is None else activation
        if not isinstance(self.activation, (GroupSort, nn.ReLU)):
            raise UnsupportedLayerError(
                f"ImplicitLayer: activation must be lipsdp.models.MaxMin, GroupSort or torch.nn.ReLU, "
                f"got {type(self.activation).__name__}"
            )
        if isinstance(self.activation, GroupSort) and hidden_features % self.activation.group_size:
            raise InvalidNetworkError(
                f"ImplicitLayer: hidden_features={hidden_features} is not a multiple of the group size "
                f"{self.activation.group_size}"
            )
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.W = nn.Parameter(0.5 * nn.init.orthogonal_(torch.empty(hidden_features, hidden_features)))
        self.U = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(hidden_features, in_features), a=math.sqrt(5)))
        self.b = nn.Parameter(torch.zeros(hidden_features))
        self.C = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(out_features, hidden_features), a=math.sqrt(5)))

    def step(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One application of the fixed-point map f(z) = φ(W z + U x + b)."""
        return self.activation(z @ self.W.T + x @ self.U.T + self.b)

    def _iterate(self, fn, z0: torch.Tensor, what: str) -> torch.Tensor:
        z = z0
        for _ in range(self.max_iter):
            z_new = fn(z)
            done = torch.linalg.vector_norm(z_new - z) <= self.tol * (1 + torch.linalg.vector_norm(z_new))
            z = z_new
            if done:
                return z
        warnings.warn(f"ImplicitLayer: {what} did not converge in {self.max_iter} iterations "
                      f"(is ||W||_2 < 1?)", RuntimeWarning, stacklevel=3)
        return z

    def equilibrium(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed point z*(x) (no gradient)."""
        with torch.no_grad():
            z0 = torch.zeros(x.shape[0], self.W.shape[0], dtype=x.dtype, device=x.device)
            return self._iterate(lambda z: self.step(z, x), z0, "the forward fixed-point iteration")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z_star = self.equilibrium(x)
        z = self.step(z_star, x)  # differentiable in W, U, b and x
        if z.requires_grad:
            z0 = z_star.clone().requires_grad_()
            with torch.enable_grad():
                f0 = self.step(z0, x)

            def implicit_grad(grad):
                vjp = lambda g: torch.autograd.grad(f0, z0, g, retain_graph=True)[0] + grad  # noqa: E731
                return self._iterate(vjp, grad, "the backward fixed-point iteration")

            z.register_hook(implicit_grad)
        return z @ self.C.T

    def extra_repr(self) -> str:
        out, hidden = self.C.shape
        return f"in_features={self.U.shape[1]}, hidden_features={hidden}, out_features={out}"
