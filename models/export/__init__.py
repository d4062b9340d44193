"""Export torch modules to the lipsdp IR (:class:`lipsdp.ir.Network`).

:func:`from_torch` traces ``forward`` with concrete shapes (:mod:`.tracer`) and walks the graph
(:mod:`.walker`), converting each operation with the converter registered for it
(:mod:`.registry`): torch.nn and functional ops in :mod:`.torch_ops` and :mod:`.pooling`,
lipsdp.models in :mod:`.lipsdp_ops`, deel-torchlip in :mod:`.deel_ops`.  Every linear map is
built exactly by :mod:`.linear`.  Everything in the IR is float64; torch weights are read in eval
mode (BatchNorm running statistics, parametrised weights as forward uses them).
"""

from .deel_ops import register_optional as _register_optional
from .lipsdp_ops import ImplicitSpec, implicit_to_ir, register_lipsdp_modules
from .registry import FUNCTION_CONVERTERS, MODULE_CONVERTERS, register_function, register_module, type_name
from .torch_ops import register_builtins
from .walker import from_torch

__all__ = [
    "from_torch",
    "register_module",
    "register_function",
    "implicit_to_ir",
    "ImplicitSpec",
    "supported_modules",
]

#: the registries under their former private names (tests and user code reach for them)
_MODULE_CONVERTERS = MODULE_CONVERTERS
_FUNCTION_CONVERTERS = FUNCTION_CONVERTERS


def supported_modules() -> list[str]:
    """Qualified names of the module types with a converter (after optional imports)."""
    _register_optional()
    return sorted(type_name(t) for t in MODULE_CONVERTERS)


register_builtins()
register_lipsdp_modules()
