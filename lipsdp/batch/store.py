"""The SQLite results file of a batch: table ``results``, one row per job key.

Guarantees: only the client process writes; every row is its own transaction (``BEGIN
IMMEDIATE`` … ``COMMIT``), so a row is either fully there or absent; a stored result (status ok /
unverified) is never overwritten, and a failed row is replaced only by a later attempt of the same
job (``INSERT … ON CONFLICT(job_key) DO UPDATE … WHERE status = 'failed'``).
"""

from __future__ import annotations

import json
import sqlite3

from .. import __version__
from .base import BatchError, need
from .manifest import Job

__all__ = ["Store", "COLUMNS", "STATUSES"]

#: job statuses in the store; "unverified" rows hold a bound that must NOT be used as a certificate
STATUSES = ("ok", "unverified", "failed")

_COLUMNS = [
    ("job_key", "TEXT PRIMARY KEY"), ("status", "TEXT NOT NULL"), ("bound", "REAL"), ("verified", "INTEGER"),
    ("model_path", "TEXT"), ("model_hash", "TEXT"), ("norm", "TEXT"), ("method", "TEXT"), ("solver", "TEXT"),
    ("solver_used", "TEXT"), ("output", "TEXT"), ("activation", "TEXT"), ("lower", "INTEGER"),
    ("time_limit", "REAL"), ("memory_limit", "INTEGER"), ("error_type", "TEXT"), ("error", "TEXT"),
    ("certificate", "TEXT"), ("seconds", "REAL"), ("solve_seconds", "REAL"), ("max_rss", "INTEGER"),
    ("host", "TEXT"), ("worker_pid", "INTEGER"), ("lipsdp_version", "TEXT"), ("attempts", "INTEGER"),
    ("started_at", "TEXT"), ("finished_at", "TEXT"), ("manifest_row", "TEXT"),
]
COLUMNS = [c for c, _ in _COLUMNS]


def _record(job: Job, row: dict, attempts: int) -> dict:
    """One store row from a job and its result row."""
    cert = row.get("certificate")
    c = cert or {}
    return {
        "job_key": job.key, "status": row["status"], "model_path": job.model, "model_hash": job.model_hash,
        "norm": job.norm, "method": job.method, "solver": job.solver,
        "solver_used": c.get("solver"), "output": json.dumps(job.params()["output"]),
        "activation": job.activation, "lower": int(job.lower), "time_limit": job.time_limit,
        "memory_limit": job.memory_limit, "error_type": row.get("error_type"), "error": row.get("error"),
        "certificate": json.dumps(cert) if cert is not None else None,
        "bound": c.get("bound"), "verified": None if cert is None else int(bool(c.get("verified"))),
        "seconds": row.get("seconds"), "solve_seconds": (c.get("timings") or {}).get("solve"),
        "max_rss": row.get("max_rss"), "host": row.get("host"), "worker_pid": row.get("worker_pid"),
        "lipsdp_version": row.get("lipsdp_version", __version__), "attempts": attempts,
        "started_at": row.get("started_at"), "finished_at": row.get("finished_at"), "manifest_row": job.source,
    }


class Store:
    """The SQLite results file (see the module docstring for its guarantees)."""

    def __init__(self, path):
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        cols = ", ".join(f"{c} {t}" for c, t in _COLUMNS)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS results ({cols})")
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
        if "job_key" not in have or not set(COLUMNS) <= have:
            raise BatchError(f"{self.path}: has a 'results' table that was not written by lipsdp batch; "
                             "choose another --out file")

    def statuses(self) -> dict:
        return dict(self.conn.execute("SELECT job_key, status FROM results"))

    def write(self, job: Job, row: dict, attempts: int) -> None:
        rec = _record(job, row, attempts)
        names = ", ".join(COLUMNS)
        marks = ", ".join("?" for _ in COLUMNS)
        update = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "job_key")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                f"INSERT INTO results ({names}) VALUES ({marks}) "
                f"ON CONFLICT(job_key) DO UPDATE SET {update} WHERE results.status = 'failed'",
                [rec[c] for c in COLUMNS],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def dataframe(self, keys=None):
        pd = need("pandas")
        df = pd.read_sql_query("SELECT * FROM results ORDER BY rowid", self.conn)
        if keys is not None:
            order = {k: i for i, k in enumerate(keys)}
            df = df[df["job_key"].isin(order)].copy()
            df["_order"] = df["job_key"].map(order)
            df = df.sort_values("_order").drop(columns="_order").reset_index(drop=True)
        return df

    def close(self):
        self.conn.close()
