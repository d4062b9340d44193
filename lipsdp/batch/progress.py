"""Progress of a running batch (a tqdm bar on a terminal, one log line per job otherwise) and the
closing text summary of the results."""

from __future__ import annotations

import os
import sys

from .base import need
from .manifest import Job
from .store import STATUSES

__all__ = ["summary"]


class _Progress:
    """tqdm bar on a terminal (done / failed / running, ETA); one log line per job otherwise."""

    def __init__(self, total: int, nthreads, enabled=None, stream=None):
        self.total, self.nthreads, self.stream = total, nthreads, stream or sys.stderr
        self.done = self.failed = 0
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.mode = "off" if enabled is False else ("bar" if tty else "log")
        self.bar = None
        if self.mode == "bar":
            tqdm = need("tqdm")
            self.bar = tqdm.tqdm(total=total, unit="job", file=self.stream, dynamic_ncols=True)
            self._postfix()

    def _postfix(self, refresh=True):
        running = min(self.total - self.done - self.failed, max(1, self.nthreads()))
        self.bar.set_postfix_str(f"done={self.done} failed={self.failed} running={running}", refresh=refresh)

    def update(self, job: Job, row: dict, attempts: int):
        if row["status"] == "failed":
            self.failed += 1
        else:
            self.done += 1
        if self.mode == "bar":
            self._postfix(refresh=False)
            self.bar.update(1)
        elif self.mode == "log":
            n = self.done + self.failed
            what = (f"bound {row['certificate']['bound']:.6g}" if row.get("certificate") else
                    f"{row.get('error_type')}: {str(row.get('error') or '').splitlines()[0][:120]}")
            again = f", attempt {attempts}" if attempts > 1 else ""
            print(f"lipsdp batch: [{n}/{self.total}] {row['status']:<10} {job.label()}  {what}  "
                  f"({row.get('seconds', 0):.1f} s on {row.get('host')}{again})", file=self.stream, flush=True)

    def note(self, text: str):
        if self.mode == "bar":
            self.bar.write(f"lipsdp batch: {text}", file=self.stream)
        elif self.mode == "log":
            print(f"lipsdp batch: {text}", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def summary(df) -> str:
    """A short text table: jobs per status, then one line per job (the first 40)."""
    if len(df) == 0:
        return "no jobs"
    counts = df["status"].value_counts()
    head = "  ".join(f"{s}: {int(counts.get(s, 0))}" for s in STATUSES)
    view = df.assign(model=df["model_path"].map(os.path.basename), output=df["output"].where(df["output"] != "null", "all"))
    cols = ["model", "norm", "method", "solver", "output", "status", "bound", "seconds", "attempts", "error_type"]
    table = view[cols].head(40).to_string(index=False, float_format=lambda x: f"{x:.6g}")
    more = f"\n… and {len(df) - 40} more rows in the store" if len(df) > 40 else ""
    return f"{len(df)} jobs — {head}\n{table}{more}"
