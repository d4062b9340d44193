"""LipSDP-RR: the residual-ReLU baseline for MaxMin / GroupSort-2 networks (math.md §4).

Classic LipSDP cannot handle MaxMin directly; the baseline rewrites each pair exactly as a
linear bypass plus ReLUs,

    MaxMin(z) = H z + G · ReLU(W̄ z),   W̄ = [[−1, 1], [1, −1]],
    H = [[0, 1], [0, 1]],  G = [[0, 1], [−1, 0]]            (per pair (a, b))

i.e. max(a, b) = b + ReLU(a − b), min(a, b) = b − ReLU(b − a).  (math.md writes
G = diag(−1, 1), which yields the pair in (min, max) order; lipsdp's MaxMin is (max, min), so G's
rows are swapped — the ReLU set and the bound are the same.)  The rewritten network is lifted
exactly as a residual network (:mod:`.residual`) and certified with LipSDP-Neuron on the ReLUs
(slope [0, 1], one multiplier per ReLU).  A single MaxMin then gives sqrt(2) instead of the true
1 (Pauli et al., ICLR 2024, §3), which is why LipSDP-NSR exists.  The check rebuilds the lifted
LMI of the rewritten network on the original weights; the rewriting itself is an identity
(tests compare forward passes).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from lipsdp.constraints import constraint_for

from ..errors import FormulationError
from ..ir import GroupSort, SlopeRestricted
from .residual import LiftedL2

__all__ = ["ResidualReLU", "maxmin_as_relu", "PAIR_WBAR", "PAIR_H", "PAIR_G"]

PAIR_WBAR = np.array([[-1.0, 1.0], [1.0, -1.0]])
PAIR_H = np.array([[0.0, 1.0], [0.0, 1.0]])
PAIR_G = np.array([[0.0, 1.0], [-1.0, 0.0]])


def maxmin_as_relu(n: int):
    """(W̄, H, G) for n neurons in n/2 adjacent pairs: MaxMin(z) = H z + G ReLU(W̄ z)."""
    p = n // 2
    return (sla.block_diag(*[PAIR_WBAR] * p), sla.block_diag(*[PAIR_H] * p), sla.block_diag(*[PAIR_G] * p))


def _expand(act, X, method):
    if isinstance(act, GroupSort) and act.group_size == 2:
        Wb, H, G = maxmin_as_relu(act.size)
        relu = SlopeRestricted("relu", size=act.size)
        return [(Wb @ X, constraint_for(relu, "neuron"))], H, G
    if isinstance(act, SlopeRestricted):
        return [(X, constraint_for(act, "neuron"))], None, None
    raise FormulationError(
        f"method='residual-relu' rewrites MaxMin / GroupSort-2 layers as residual ReLUs; got a "
        f"{act.describe()} layer. Use method='neuron' (LipSDP-NSR) for GroupSort with larger groups "
        "or Householder activations"
    )


class ResidualReLU(LiftedL2):
    """LipSDP-Neuron on the residual-ReLU rewriting of a MaxMin network (LipSDP-RR baseline)."""

    expand = staticmethod(_expand)

    def __init__(self, network, method: str = "residual-relu", output=None):
        super().__init__(network, method, output)
