"""Torch side of lipsdp: Lipschitz-friendly modules and the exporter to the IR.

Everything that imports torch lives here; :mod:`lipsdp` itself stays torch-free.
"""

from .export import ImplicitSpec, from_torch, implicit_to_ir, register_function, register_module, supported_modules
from .modules import GroupSort, Householder, ImplicitLayer, MaxMin, Residual

__all__ = [
    "from_torch",
    "register_module",
    "register_function",
    "supported_modules",
    "implicit_to_ir",
    "ImplicitSpec",
    "MaxMin",
    "GroupSort",
    "Householder",
    "Residual",
    "ImplicitLayer",
]
