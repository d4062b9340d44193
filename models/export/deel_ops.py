"""Converters for deel-torchlip's Lipschitz modules, registered when deel-torchlip imports.

deel's conventions differ from the IR's and are mapped by what the modules compute (never by
class name): its GroupSort sorts ascending, its MaxMin is [ReLU(x), ReLU(−x)] (doubling the
width), its HouseHolder pairs channel j with channel j + C/2.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from lipsdp import ir
from lipsdp.errors import InvalidNetworkError

from .linear import affine, channel_groups, f64, grouped, linear_map, numel
from .registry import register_module
from .torch_ops import conv_layers

#: "deel" -> None once registered, or the import error text
OPTIONAL_STATE: dict[str, object] = {}


def deel_groupsort(m, shape):
    """deel GroupSort: contiguous channel groups sorted *ascending*, times k (``_coefficient_lip``);
    ``group_size=None`` (FullSort) sorts all channels.  IR: descending sort + group reversal."""
    channels = shape[0]
    g = channels if m.group_size is None or m.group_size > channels else int(m.group_size)
    k = float(m._coefficient_lip)
    if g == 1:
        return ([affine(k * sp.identity(numel(shape), format="csr"))] if k != 1.0 else []), shape
    perm = channel_groups(shape, g, type(m).__name__)
    ascending = perm.reshape(-1, g)[:, ::-1].ravel()
    return grouped(ir.GroupSort(g), perm, ascending, scale=k), shape


def deel_maxmin(m, shape):
    """deel MaxMin: k · cat(ReLU(x), ReLU(−x)) along ``dim`` (doubles the width) =
    Affine [I; −I] (in the concatenation order) → ReLU → k I."""
    dim = 1 if m._dim is None else (m._dim if m._dim >= 0 else m._dim + len(shape) + 1)
    W, out_shape = linear_map(lambda x: torch.cat((x, -x), dim=dim), shape, sparse=True)
    k = float(m._coefficient_lip)
    layers = [affine(W), ir.SlopeRestricted(fn="relu")]
    if k != 1.0:
        layers.append(affine(k * sp.identity(W.shape[0], format="csr")))
    return layers, out_shape


def deel_householder(m, shape):
    """deel HouseHolder: pairs (x_j, y_j) = (channel j, channel j + C/2) with angle θ_j; reflects
    by [[cos θ, sin θ], [sin θ, −cos θ]] = I − 2 v vᵀ, v = (sin θ/2, −cos θ/2), when vᵀz > 0.
    In the IR convention (keep when uᵀz > 0) that is u = −v = (−sin θ/2, cos θ/2); the two agree
    on vᵀz = 0 too, where the reflection is the identity."""
    channels = shape[0]
    theta = f64(m.theta).ravel()
    if channels != 2 * theta.size:
        raise InvalidNetworkError(f"deel HouseHolder with {theta.size} angles expects {2 * theta.size} channels, got shape {shape}")
    idx = np.arange(numel(shape)).reshape(shape)
    perm = np.moveaxis(idx.reshape((2, channels // 2) + tuple(shape[1:])), 0, -1).ravel()
    U = np.stack([-np.sin(theta / 2), np.cos(theta / 2)], axis=1)
    return grouped(ir.Householder(np.repeat(U, numel(shape[1:]), axis=0)), perm), shape


def deel_padconv(m, shape):
    """deel PadConv1d/2d (and SpectralConv*, FrobeniusConv2d): its own padding (e.g. symmetric)
    then the torch convolution with the effective (parametrised) weight."""
    return conv_layers(m, shape, pre=m.pad)


def register_optional() -> None:
    """Register deel-torchlip's modules if it imports (once)."""
    if "deel" in OPTIONAL_STATE:
        return
    try:
        from deel import torchlip
    except Exception as exc:  # not installed, or broken against this torch
        OPTIONAL_STATE["deel"] = f"{type(exc).__name__}: {exc}"
        return
    OPTIONAL_STATE["deel"] = None
    register_module(torchlip.GroupSort, deel_groupsort)  # GroupSort2 and FullSort are subclasses
    register_module(torchlip.MaxMin, deel_maxmin)
    register_module(torchlip.HouseHolder, deel_householder)
    for name in ("PadConv1d", "PadConv2d"):
        if hasattr(torchlip, name):
            register_module(getattr(torchlip, name), deel_padconv)
    # SpectralLinear / FrobeniusLinear subclass nn.Linear: the Linear converter reads the
    # parametrised weight (normalisation and k_coef_lip included).
