"""Progress display for long solves: stage, iteration and current checked bound (tqdm).

One small object, :class:`Progress`, is both a context manager and a callback::

    with progress() as pb:            # enabled only when interactive (see below)
        pb.stage("build")
        ...
        pb(iteration=12, bound=4.0183)   # e.g. from a solver's per-iteration hook

``lipsdp.certify`` opens one per call and marks the stage boundaries build → solve → check.
A solver that iterates itself can report to the innermost open display without being handed
it: ``lipsdp.progress.current()(iteration=k, bound=b)`` (a no-op when none is open).

Enabled when ``enabled`` is True, or — with ``enabled=None`` (default) — when the environment
variable ``LIPSDP_PROGRESS`` is ``1``/``0``, else when the session is interactive: stderr is
a terminal, or the code runs in a Jupyter kernel.  Batch jobs, pipes and the test suite see
nothing.  In notebooks the widget bar (``tqdm.notebook``) is used when ipywidgets is
installed, the text bar otherwise.  tqdm is imported only when a display is shown.
"""

from __future__ import annotations

import math
import os
import sys
import time

__all__ = ["Progress", "progress", "current", "is_interactive", "STAGES"]

#: the stages of one certification, in order (the bar's total)
STAGES = ("build", "solve", "check")

_OPEN: list["Progress"] = []


def _in_jupyter_kernel() -> bool:
    ip = sys.modules.get("IPython")
    if ip is None or "ipykernel" not in sys.modules:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:  # pragma: no cover - exotic shells
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def is_interactive() -> bool:
    """True for a terminal (stderr is a TTY) or a Jupyter kernel; ``LIPSDP_PROGRESS`` overrides."""
    env = os.environ.get("LIPSDP_PROGRESS", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    if _in_jupyter_kernel():
        return True
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _tqdm_class():
    if _in_jupyter_kernel():
        try:
            import ipywidgets  # noqa: F401  (tqdm.notebook raises without it)
            from tqdm.notebook import tqdm

            return tqdm
        except ImportError:
            pass
    from tqdm import tqdm

    return tqdm


class Progress:
    """A progress display (or a silent no-op when disabled).

    Call it, or its methods, with what is known:

    * ``stage(name)`` — a new stage starts (advances the bar when ``name`` is in ``STAGES``);
    * ``__call__(stage=None, iteration=None, bound=None, **info)`` — update the text shown:
      ``iteration`` of the current stage, ``bound`` the current *checked* bound (the value
      that passed lipsdp.check; never pass an unverified solver value here);
    * ``close(bound=None)`` — final bound, then the display is removed from :func:`current`.

    Every record is also kept in ``history`` (list of dicts with the elapsed time), so callers
    and tests can see what was reported even when nothing is drawn.
    """

    def __init__(self, enabled: bool | None = None, desc: str = "lipsdp", total: int | None = len(STAGES)):
        self.enabled = is_interactive() if enabled is None else bool(enabled)
        self.desc = desc
        self.total = total
        self.history: list[dict] = []
        self.closed = False
        self._stage = None
        self._t0 = time.perf_counter()
        self._bar = None
        if self.enabled:
            try:
                self._bar = _tqdm_class()(total=total, desc=desc, leave=True, dynamic_ncols=True,
                                          bar_format="{desc}: {n_fmt}/{total_fmt} stages |{bar}| {elapsed}{postfix}")
            except ImportError:  # tqdm missing: degrade to silence rather than fail a solve
                self.enabled = False
        _OPEN.append(self)

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reporting ---------------------------------------------------------------------
    def stage(self, name: str) -> None:
        self(stage=name)

    def __call__(self, stage: str | None = None, iteration: int | None = None, bound: float | None = None, **info):
        if self.closed:
            return
        rec = {"t": time.perf_counter() - self._t0, "stage": stage or self._stage, "iteration": iteration,
               "bound": bound, **info}
        self.history.append(rec)
        advance = stage is not None and stage != self._stage and stage in STAGES
        if stage is not None:
            self._stage = stage
        if self._bar is not None:
            post = {"stage": self._stage}
            if iteration is not None:
                post["it"] = iteration
            if bound is not None and math.isfinite(bound):
                post["bound"] = f"{bound:.6g}"
            post.update({k: v for k, v in info.items() if isinstance(v, (int, float, str))})
            self._bar.set_postfix(post, refresh=not advance)
            if advance and self._bar.n < (self.total or 0):
                self._bar.update(1)

    def close(self, bound: float | None = None) -> None:
        if self.closed:
            return
        if bound is not None:
            self(stage="done", bound=bound)
        self.closed = True
        if self._bar is not None:
            if self.total:
                self._bar.update(max(0, self.total - self._bar.n))
            self._bar.close()
        if self in _OPEN:
            _OPEN.remove(self)


class _Null(Progress):
    def __init__(self):  # noqa: D401 - a disabled display that is never registered
        self.enabled, self.desc, self.total, self.history, self.closed = False, "", None, [], True
        self._bar = None

    def __call__(self, *a, **k):
        return None


_NULL = _Null()


def progress(enabled: bool | None = None, desc: str = "lipsdp", total: int | None = len(STAGES)) -> Progress:
    """A :class:`Progress` display; ``enabled=None`` means "only when interactive"."""
    return Progress(enabled, desc, total)


def current() -> Progress:
    """The innermost open display (a silent no-op when none is open)."""
    while _OPEN and _OPEN[-1].closed:
        _OPEN.pop()
    return _OPEN[-1] if _OPEN else _NULL
