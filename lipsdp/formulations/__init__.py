"""Formulations: (model, norm, method, output) → LMI problem, multiplier recovery, checked bound.

Every formulation implements the :class:`~.base.Formulation` contract.  :func:`formulation_for`
selects one by the model's *type* and the norm, from :data:`FORMULATIONS`; a few methods name a
formulation of their own (:data:`METHOD_FORMULATIONS`).  Register new ones with
:func:`register_formulation`.
"""

from __future__ import annotations

from ..errors import FormulationError, InvalidNetworkError
from ..ir import Network
from .base import Formulation, Recovered, matrix_of, select_output
from .feedforward import FeedforwardL2, naive_l2
from .implicit import ImplicitL2, ImplicitNetwork
from .linf import FeedforwardLinf, MaxOverOutputs
from .local import Local
from .residual import ResidualL2
from .rr import ResidualReLU

__all__ = ["FORMULATIONS", "METHOD_FORMULATIONS", "register_formulation", "formulation_for", "structure_of",
           "Formulation", "FeedforwardL2", "FeedforwardLinf", "MaxOverOutputs", "ResidualL2", "ImplicitL2",
           "ResidualReLU", "Local", "Recovered", "naive_l2", "select_output", "matrix_of"]


def _linf_feedforward(network, method, output):
    """ℓ∞ of a vector-valued network without ``output``: the max over its outputs."""
    if output is None and network.output_dim > 1:
        return MaxOverOutputs(network, method)
    return FeedforwardLinf(network, method, output)


#: (structure, norm) -> formulation factory (class or callable(model, method, output))
FORMULATIONS: dict[tuple[str, str], object] = {
    ("feedforward", "l2"): FeedforwardL2,
    ("feedforward", "linf"): _linf_feedforward,
    ("residual", "l2"): ResidualL2,
    ("implicit", "l2"): ImplicitL2,
}

#: method -> {norm: factory}: methods that are formulations of their own (LipSDP-RR baseline)
METHOD_FORMULATIONS: dict[str, dict[str, object]] = {
    "residual-relu": {"l2": ResidualReLU},
}


def register_formulation(structure: str, norm: str, factory) -> None:
    """Register ``factory(model, method, output)`` for models of ``structure`` and ``norm``."""
    FORMULATIONS[(structure, norm)] = factory


def structure_of(model) -> str:
    """"feedforward", "residual" or "implicit", by the model's type."""
    if isinstance(model, ImplicitNetwork):
        return "implicit"
    if isinstance(model, Network):
        return "feedforward" if model.is_feedforward else "residual"
    raise InvalidNetworkError(
        f"cannot formulate a {type(model).__name__}: expected a lipsdp Network or ImplicitNetwork "
        "(lipsdp.certify converts torch modules, weight files and weight lists)")


def formulation_for(model, norm: str, method: str = "neuron", output=None, region=None) -> Formulation:
    """The formulation for ``model`` (Network or ImplicitNetwork), ``norm`` and ``method``; with a
    ``region``, the local question on it (:class:`~.local.Local`)."""
    if region is not None:
        if structure_of(model) == "implicit":
            raise FormulationError("region= applies to feedforward and residual networks, not implicit models")
        return Local(model, region, norm, method, output, factory=formulation_for)
    structure = structure_of(model)
    if method in METHOD_FORMULATIONS:
        by_norm = METHOD_FORMULATIONS[method]
        if norm not in by_norm:
            raise FormulationError(f"method={method!r} supports norm {', '.join(map(repr, by_norm))} only, got {norm!r}")
        if structure == "implicit":
            raise FormulationError(f"method={method!r} does not apply to implicit models; use 'neuron' or 'layer'")
        return by_norm[norm](model, method, output)
    try:
        factory = FORMULATIONS[(structure, norm)]
    except KeyError:
        valid = sorted({nm for (st, nm) in FORMULATIONS if st == structure})
        raise FormulationError(f"norm {norm!r} is not supported for {structure} models; valid: {valid}") from None
    return factory(model, method, output)
