"""The user-facing choices, parsed in one place: norms, outputs and certification options.

Every entry point (Python API, CLI, batch manifests, lower bounds) goes through these, so a norm
alias or an output vector means the same thing everywhere, and a bad value gets the same message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

import numpy as np

from .errors import FormulationError

__all__ = ["NORMS", "NORM_ALIASES", "METHODS", "parse_norm", "parse_output", "CertifyOptions"]

#: the multiplier classes a user can ask for (each QC family lists what they mean for it in its
#: VARIANTS; "residual-relu" is the LipSDP-RR baseline formulation)
METHODS = ("neuron", "layer", "chain", "channel", "residual-relu")

#: the norms lipsdp certifies: ℓ2 → ℓ2, and ℓ∞ → |·| of a scalar output (max over outputs)
NORMS = ("l2", "linf")
NORM_ALIASES = {"l2": "l2", "2": "l2", "linf": "linf", "inf": "linf", "l_inf": "linf", "l∞": "linf"}


def parse_norm(norm) -> str:
    """'l2' or 'linf' (aliases: '2', 'inf', 'l_inf'); raises FormulationError otherwise."""
    key = str(norm).strip().lower()
    if key not in NORM_ALIASES:
        raise FormulationError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    return NORM_ALIASES[key]


def parse_output(value):
    """None (all outputs), a logit index (int ≥ 0) or a direction c (tuple of floats).

    Accepts the forms users write: None / "" / "all", an int or a digit string, a list or tuple of
    numbers, a JSON vector "[1, -1, 0]" or a comma-separated "1,-1,0".  Range checks against the
    network's output count happen in the formulation (:func:`lipsdp.formulations.select_output`).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all", "none", "null")):
        return None
    if isinstance(value, (bool, np.bool_)):
        raise FormulationError(f"output must be None, a logit index or a vector c, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise FormulationError(f"output index must be >= 0, got {value}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+", text):
            return int(text)
        try:
            parsed = json.loads(text) if text.startswith("[") else [float(t) for t in text.split(",")]
        except ValueError:
            raise FormulationError(
                f"output must be empty/all, a logit index (e.g. 8) or a vector like [1,-1,0] or 1,-1,0; got {text!r}"
            ) from None
        return parse_output(parsed)
    arr = np.asarray(value)
    if arr.ndim == 1 and arr.size and arr.dtype.kind in "iuf":
        if not np.all(np.isfinite(arr)):
            raise FormulationError("output vector c must be finite")
        return tuple(float(v) for v in arr)
    raise FormulationError(f"output must be None, a logit index or a non-empty vector c of numbers, got {value!r}")


@dataclass(frozen=True)
class CertifyOptions:
    """How :func:`lipsdp.certify` solves and checks (defaults in one place).

    solver: "auto" or a backend name; tol, time_limit, verbose: passed to the solver;
    decompose: "auto", True or False (exact chordal decomposition, math.md §3);
    memory_limit: bytes, a string like "8GB", or None (80 % of the free memory);
    progress: show stages (None: only when interactive); lower: compute a lower bound.
    """

    solver: str = "auto"
    tol: float = 1e-8
    time_limit: float | None = None
    verbose: bool = False
    decompose: object = "auto"
    memory_limit: object = None
    progress: bool | None = None
    lower: bool = True

    def __post_init__(self):
        dec = self.decompose
        if isinstance(dec, str):
            dec = {"auto": "auto", "true": True, "yes": True, "on": True, "false": False, "no": False,
                   "off": False}.get(dec.strip().lower(), dec)
        if dec is None:
            dec = False
        if dec not in ("auto", True, False) or isinstance(dec, (int, float)) and not isinstance(dec, bool):
            raise FormulationError(f"decompose must be 'auto', True or False, got {self.decompose!r}")
        object.__setattr__(self, "decompose", dec)
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise FormulationError(f"tol must be a positive number, got {self.tol!r}")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float)) and self.time_limit >= 0):
            raise FormulationError(f"time_limit must be seconds (>= 0) or None, got {self.time_limit!r}")
        object.__setattr__(self, "solver", str(self.solver).lower())

    @classmethod
    def from_kwargs(cls, **kw) -> "CertifyOptions":
        valid = {f.name for f in fields(cls)}
        bad = sorted(set(kw) - valid)
        if bad:
            raise FormulationError(f"unknown option(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
        return cls(**kw)
