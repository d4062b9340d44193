"""lipsdp: certified upper bounds on the Lipschitz constant of neural networks by SDP.

Pipeline (one folder or module per stage)::

    IR (lipsdp.ir) -> quadratic constraints (lipsdp.constraints) -> assembly (lipsdp.assembly)
       -> solver backend (lipsdp.backends) -> certificate check (lipsdp.check) -> API / CLI

Quick use::

    import lipsdp
    cert = lipsdp.certify(model, norm="l2")      # torch module, Network or weight file path
    print(cert.bound, cert.verified)
"""

__version__ = "0.1.0"

import os as _os

# numpy and scipy each bundle an OpenBLAS; with the default spin-wait, the idle threads of one
# pool steal the cores from the other whenever calls alternate (measurements:
# benchmarks/results-native.md).  Only effective when lipsdp is imported before numpy; set the
# variable yourself to override.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import errors
from .ir import Affine, GroupSort, Householder, MaxMin, Network, Residual, SlopeRestricted

__all__ = [
    "__version__",
    "errors",
    "Network",
    "Affine",
    "SlopeRestricted",
    "GroupSort",
    "MaxMin",
    "Householder",
    "Residual",
    "certify",
    "lower_bound",
    "from_torch",
    "from_weights",
    "load",
    "Certificate",
    "certified_accuracy",
    "certified_radius",
    "Box",
    "LinfBall",
    "L2Ball",
]


def __getattr__(name):  # lazy: keep `import lipsdp` cheap and torch-free
    if name in ("certify", "Certificate", "as_network"):
        from . import api

        return getattr(api, name)
    if name == "lower_bound":
        from .lower import lower_bound

        return lower_bound
    if name in ("from_weights", "load"):
        from . import io

        return getattr(io, name)
    if name in ("certified_accuracy", "certified_radius"):
        from . import robust

        return getattr(robust, name)
    if name in ("Box", "LinfBall", "L2Ball"):
        from . import local

        return getattr(local, name)
    if name == "from_torch":
        from .models.export import from_torch  # torch imported only here

        return from_torch
    raise AttributeError(f"module 'lipsdp' has no attribute {name!r}")
