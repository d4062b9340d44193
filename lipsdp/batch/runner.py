"""The client side of a batch: submit jobs to Dask, resubmit those whose worker was lost, and
commit one store row per finished job.

Guarantees: every job ends as exactly one row (ok / unverified / failed); a job whose worker was
lost is resubmitted up to ``retries`` times, its attempts counted exactly; Ctrl-C cancels the
outstanding jobs and leaves every committed row complete.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from .base import BatchError, need, now
from .cluster import local_cluster
from .manifest import FIELDS, Job, expand, load_manifest
from .progress import _Progress
from .store import Store
from .worker import _execute

__all__ = ["run"]


def _as_jobs(jobs) -> list[Job]:
    if isinstance(jobs, (str, os.PathLike)):
        return load_manifest(jobs)
    jobs = list(jobs)
    if all(isinstance(j, Job) for j in jobs):
        return jobs
    if all(isinstance(j, dict) for j in jobs):
        return expand(jobs)
    raise BatchError("jobs must be a manifest path, a list of lipsdp.batch.Job or a list of dicts with the "
                     f"manifest fields ({', '.join(FIELDS)})")


def run(jobs, client=None, store="lipsdp-results.sqlite", workers=None, retries=2, resume=False,
        progress=None, on_result=None):
    """Run certification jobs on Dask and return one row per job as a pandas DataFrame.

    Parameters
    ----------
    jobs: a manifest path (YAML / CSV, see :mod:`lipsdp.batch`), a list of :class:`Job`, or a
        list of dicts with the manifest fields.
    client: a ``distributed.Client``; None builds :func:`local_cluster` (``workers`` processes)
        and closes it at the end.
    store: the SQLite results file (created if missing); its folder must exist and be writable,
        which is checked before anything runs.
    retries: how many times a job is resubmitted after its worker was lost (killed, crashed,
        disconnected).  Failures of the job itself (load error, time or memory limit, solver
        error) are deterministic and stored as failed rows at once.
    resume: skip jobs whose result is already stored (status ok / unverified; same model hash
        and parameters); failed rows are run again.  Without it, a store that already holds any of
        these jobs is an error.
    progress: None (bar on a terminal, log lines otherwise) or False.
    on_result: optional callback ``on_result(job, row)`` called after each row is committed.

    Ctrl-C (KeyboardInterrupt) cancels the outstanding jobs, closes the cluster it built and
    re-raises; every row already committed is complete, no row is partial.
    """
    from ..cli import check_writable

    check_writable(store, "results store")
    jobs = _as_jobs(jobs)
    st = Store(store)
    try:
        stored = st.statuses()
        keys = [j.key for j in jobs]
        if resume:
            todo = [j for j in jobs if stored.get(j.key) not in ("ok", "unverified")]
        else:
            clash = [k for k in keys if k in stored]
            if clash:
                raise BatchError(f"the results store {st.path} already holds {len(clash)} of these {len(jobs)} jobs; "
                                 "pass resume=True (--resume) to skip them, or choose another store (--out)")
            todo = jobs
        if todo:
            _run_jobs(todo, st, client, workers, retries, progress, on_result, skipped=len(jobs) - len(todo))
        return st.dataframe(keys)
    finally:
        st.close()


class _Submitter:
    """Submits (job, attempt) pairs as Dask tasks and remembers which future is which."""

    def __init__(self, client):
        self.client, self.meta, self.futures = client, {}, []

    def __call__(self, job: Job, attempt: int):
        spec = {k: v for k, v in asdict(job).items() if k != "source"}
        spec["output"] = job.params()["output"]
        fut = self.client.submit(_execute, spec, key=f"lipsdp-job-{job.key[:20]}-{attempt}", pure=False)
        self.meta[fut.key] = (job, attempt)
        self.futures.append(fut)
        return fut

    def cancel_pending(self):
        try:
            self.client.cancel([f for f in self.futures if not f.done()])
        except Exception:
            pass


def _lost_row(exc, attempt: int) -> dict:
    """The failed row of a job whose worker was lost once too often."""
    lost = type(exc).__name__ == "KilledWorker"
    return {"status": "failed", "error_type": "worker-lost" if lost else "error",
            "error": f"{type(exc).__name__}: {exc} (after {attempt} attempt(s))", "finished_at": now()}


def _collect(ac, submit: _Submitter, st: Store, bar: _Progress, retries, on_result, written: set):
    """Consume finished futures: resubmit lost jobs, commit one row per job."""
    for fut in ac:
        job, attempt = submit.meta.pop(fut.key)
        try:
            row = fut.result()
        except Exception as exc:  # the worker was lost or the task could not run
            if attempt <= retries:
                lost = type(exc).__name__ == "KilledWorker"
                bar.note(f"{job.label()}: {'worker lost' if lost else type(exc).__name__} "
                         f"(attempt {attempt}); resubmitting")
                ac.add(submit(job, attempt + 1))
                fut.release()
                continue
            row = _lost_row(exc, attempt)
        fut.release()
        if job.key in written:  # cannot happen: one future per (job, attempt) is pending at a time
            continue
        st.write(job, row, attempt)
        written.add(job.key)
        bar.update(job, row, attempt)
        if on_result is not None:
            on_result(job, row)


def _run_jobs(todo, st, client, workers, retries, progress, on_result, skipped):
    distributed = need("distributed")
    cluster = None
    if client is None:
        cluster = local_cluster(workers)
        client = distributed.Client(cluster)
    submit, written = _Submitter(client), set()
    bar = _Progress(len(todo), lambda: sum(client.nthreads().values()), enabled=progress)
    if skipped:
        bar.note(f"--resume: {skipped} job(s) already stored, {len(todo)} to run")
    try:
        ac = distributed.as_completed([submit(j, 1) for j in todo])
        _collect(ac, submit, st, bar, retries, on_result, written)
    except KeyboardInterrupt:
        bar.note(f"interrupted: {len(written)} finished job(s) are stored; cancelling the rest")
        raise
    finally:
        bar.close()
        submit.cancel_pending()
        if cluster is not None:
            client.close()
            cluster.close()
