"""Quadratic-constraint generators, one class per activation family, and their registry.

IR activation ``kind`` → QC class.  Extend with :func:`register_constraint`.
"""

from lipsdp.errors import UnsupportedLayerError

from .base import Param, QuadraticConstraint, Term
from .groupsort import GroupSortQC, HouseholderQC
from .slope import SlopeRestrictedQC

__all__ = [
    "Param",
    "Term",
    "QuadraticConstraint",
    "SlopeRestrictedQC",
    "GroupSortQC",
    "HouseholderQC",
    "REGISTRY",
    "register_constraint",
    "constraint_for",
]

REGISTRY: dict[str, type[QuadraticConstraint]] = {
    "slope": SlopeRestrictedQC,
    "groupsort": GroupSortQC,
    "householder": HouseholderQC,
}


def register_constraint(kind: str, cls: type[QuadraticConstraint]) -> None:
    """Register the QC class for IR activations whose ``kind`` attribute is ``kind``."""
    if not (isinstance(cls, type) and issubclass(cls, QuadraticConstraint)):
        raise TypeError(f"register_constraint: {cls!r} is not a QuadraticConstraint subclass")
    REGISTRY[kind] = cls


def constraint_for(activation, variant: str | None = None) -> QuadraticConstraint:
    """The QC instance for one IR activation layer (raises if the family is unknown)."""
    try:
        cls = REGISTRY[activation.kind]
    except KeyError:
        raise UnsupportedLayerError(
            f"no quadratic constraint for activation kind {activation.kind!r} "
            f"({type(activation).__name__}); known: {sorted(REGISTRY)}; add one with "
            "lipsdp.constraints.register_constraint"
        ) from None
    return cls(activation, variant)
