"""Formulations: (network structure, norm) → LMI problem, multiplier recovery, certificate check.

Each formulation class provides ``problem()``, ``recover(problem, θ)``, ``check(recovered)``,
``naive_bound()``, ``bound_from_rho(ρ)`` and ``trivial()``; see :mod:`.feedforward` for the
reference implementation.  Register new ones in :data:`FORMULATIONS`.
"""

from __future__ import annotations

from ..errors import FormulationError
from .feedforward import FeedforwardL2, Recovered, naive_l2, select_output

__all__ = ["FORMULATIONS", "register_formulation", "formulation_for", "FeedforwardL2", "Recovered",
           "naive_l2", "select_output"]

#: (structure, norm) -> formulation class; structure is "feedforward" or "residual"
FORMULATIONS: dict[tuple[str, str], type] = {("feedforward", "l2"): FeedforwardL2}


def register_formulation(structure: str, norm: str, cls: type) -> None:
    FORMULATIONS[(structure, norm)] = cls


def formulation_for(network, norm: str, method: str, output=None):
    if method == "residual-relu":  # LipSDP-RR baseline (rr.py)
        from .rr import ResidualReLU

        if norm != "l2":
            raise FormulationError(f"method='residual-relu' supports norm='l2' only, got {norm!r}")
        return ResidualReLU(network, method, output)
    structure = "feedforward" if network.is_feedforward else "residual"
    try:
        cls = FORMULATIONS[(structure, norm)]
    except KeyError:
        valid = sorted({nm for (st, nm) in FORMULATIONS if st == structure})
        raise FormulationError(f"norm {norm!r} is not supported for {structure} networks; valid: {valid}") from None
    form = cls(network, method, output)
    from .reduced import Reduced

    # GroupSort / Householder with P-free multipliers: solve on the subspace they preserve
    return Reduced(form) if Reduced.applies(form) else form

# --- further formulations (linf.py, residual.py, rr.py) ---------------------------------------
from .linf import FeedforwardLinf  # noqa: E402
from .residual import ResidualL2  # noqa: E402

register_formulation("feedforward", "linf", FeedforwardLinf)
register_formulation("residual", "l2", ResidualL2)
