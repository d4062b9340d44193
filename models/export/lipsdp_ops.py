"""Converters for the modules of :mod:`lipsdp.models` (registered at import), and the export of
implicit (equilibrium) layers to an :class:`ImplicitSpec` (math.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsdp import ir
from lipsdp.errors import InvalidNetworkError, UnsupportedLayerError

from .. import modules as lm
from .linear import channel_groups, f64, grouped, numel
from .registry import converter_for, register_module, type_name


def convert_groupsort(m: lm.GroupSort, shape: tuple):
    g = m.group_size
    return grouped(ir.GroupSort(g), channel_groups(shape, g, type(m).__name__)), shape


def convert_householder(m: lm.Householder, shape: tuple):
    g = m.group_size
    perm = channel_groups(shape, g, "Householder")
    V = f64(m.unit_vectors())
    n_groups = shape[0] // g
    if V.shape[0] not in (1, n_groups):
        raise InvalidNetworkError(f"Householder: {V.shape[0]} vectors for {n_groups} channel groups")
    # groups are ordered (channel group, spatial position) by channel_groups
    V = np.repeat(np.broadcast_to(V, (n_groups, g)), numel(shape[1:]), axis=0)
    return grouped(ir.Householder(V), perm), shape


def convert_implicit(m, shape):
    raise UnsupportedLayerError(
        "an implicit (equilibrium) layer is not a feedforward map; export it with lipsdp.models.implicit_to_ir(module)"
    )


def register_lipsdp_modules() -> None:
    register_module(lm.GroupSort, convert_groupsort)  # MaxMin is a subclass
    register_module(lm.Householder, convert_householder)
    register_module(lm.ImplicitLayer, convert_implicit)


@dataclass(frozen=True)
class ImplicitSpec:
    """An implicit model z = φ(W z + U x + b), y = C z as float64 numpy arrays.

    ``activation`` is the IR activation (``lipsdp.ir.GroupSort`` or ``SlopeRestricted('relu')``)
    sized to the hidden width; groups are contiguous.  Shapes: W (n, n), U (n, d), C (m, n), b (n,).
    """

    W: np.ndarray
    U: np.ndarray
    C: np.ndarray
    b: np.ndarray
    activation: object


def implicit_to_ir(module: "lm.ImplicitLayer") -> ImplicitSpec:
    """Export a :class:`lipsdp.models.ImplicitLayer` to an :class:`ImplicitSpec` (math.md §8)."""
    if not isinstance(module, lm.ImplicitLayer):
        raise UnsupportedLayerError(
            f"implicit_to_ir: expected a lipsdp.models.ImplicitLayer, got {type_name(type(module))}"
        )
    n = module.W.shape[0]
    converter = converter_for(module.activation)
    layers, _ = converter(module.activation, (n,))
    if len(layers) != 1 or not isinstance(layers[0], ir.Activation):  # pragma: no cover - guarded in ImplicitLayer
        raise UnsupportedLayerError(f"implicit_to_ir: activation {type(module.activation).__name__} is not elementwise/grouped")
    return ImplicitSpec(
        W=f64(module.W), U=f64(module.U), C=f64(module.C), b=f64(module.b), activation=layers[0].with_size(n)
    )
