"""The :class:`Certificate` every certification returns (a leaf module: numpy only).

A certificate's ``bound`` is an upper bound on the Lipschitz constant only when ``verified`` is
True: it is then the value the independent float64 check (:mod:`lipsdp.check`, math.md §9)
proved, rounded upwards.  ``rewrites`` records the exact problem rewrites that were stacked
between the network's LMI and the solver (:mod:`lipsdp.reductions`); ``region`` the input region
of a local bound (None: global).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import __version__

__all__ = ["Certificate", "CertificationWarning"]


class CertificationWarning(UserWarning):
    """Emitted when a bound could not be verified independently."""


@dataclass
class Certificate:
    """A checked upper bound on the Lipschitz constant.

    ``bound`` is the value that passed the independent float64 check (lipsdp.check) — or, when
    ``verified`` is False, the solver's unverified value, which must not be used as a bound.
    """

    bound: float
    verified: bool
    naive_bound: float
    norm: str
    method: str
    solver: str
    status: str
    lower_bound: float | None = None
    output: object = None
    margin: float = float("nan")
    solver_bound: float | None = None
    optimal: bool = True
    message: str = ""
    timings: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    network: str = ""
    version: str = __version__
    per_output: list | None = None  # ℓ∞ without ``output``: one checked bound per logit
    rewrites: list = field(default_factory=list)  # the reductions applied, in order
    region: dict | None = None  # the input region of a local bound (None: global)
    lower_kind: str | None = None  # "quotient" (a real difference quotient) or "exact"

    @property
    def gap(self) -> float | None:
        """Relative gap (upper − lower) / lower, when a lower bound is known."""
        if self.lower_bound is None or not self.lower_bound:
            return None
        return (self.bound - self.lower_bound) / self.lower_bound

    def to_dict(self) -> dict:
        d = asdict(self)
        out = d.get("output")
        if isinstance(out, np.ndarray):
            d["output"] = out.tolist()
        d["gap"] = self.gap
        return _jsonable(d)

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def rows(self) -> list[tuple[str, str]]:
        def f(x):
            return "—" if x is None else f"{x:.6g}"

        return [
            ("network", self.network),
            ("norm / method", f"{self.norm} / {self.method}" + ("" if self.output is None else f" (output {self.output})")),
            ("certified bound", f(self.bound) + ("" if self.verified else "  (NOT VERIFIED)")),
            ("naive bound (product of norms)", f(self.naive_bound)),
            (f"lower bound ({self.lower_kind or 'sampled'})", f(self.lower_bound)),
            ("gap upper/lower", "—" if self.gap is None else f"{100 * self.gap:.3g} %"),
            ("solver / status", f"{self.solver} / {self.status}" + ("" if self.optimal else " (not optimal)")),
            ("verified", "yes" if self.verified else "NO — " + self.message),
            ("time (build / solve / check)",
             " / ".join(f"{self.timings.get(k, 0.0):.3g} s" for k in ("build", "solve", "check"))),
        ]

    def plot(self, ax=None, **kw):
        """Plot [lower, upper] against the naive bound (:func:`lipsdp.plot.compare`)."""
        from .plot import compare

        return compare(self, ax=ax, **kw)

    def _repr_html_(self) -> str:
        from .report import certificate_table_html

        return certificate_table_html(self)

    def __str__(self):
        rows = self.rows()
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x
