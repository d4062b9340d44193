"""The worker side of a batch: each job runs in its own process, with its own limits.

On every Dask worker thread a *launcher* (zygote) process imports the certification stack once
and forks one process per job.  Guarantees:

- the time limit is wall clock: when it runs out the job process is killed (SIGKILL);
- the memory limit is ``setrlimit(RLIMIT_AS)`` in the job process only;
- a job process dies with its launcher (``PR_SET_PDEATHSIG``), and the launcher exits, killing its
  running job, when its worker goes away (its stdin closes);
- :func:`_execute` never raises for a failure of the job itself (load error, limit, solver error):
  it returns a failed row.  It raises only when the launcher itself died, a fault of the worker
  that :func:`lipsdp.batch.run` resubmits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .. import __version__
from ..errors import LipSDPError
from .base import now
from .manifest import file_hash

_PRELOAD = ("lipsdp.api", "lipsdp.io", "lipsdp.lower", "lipsdp.formulations", "lipsdp.backends")


def _preload_modules() -> tuple[str, ...]:
    """lipsdp's own modules, then what every installed backend imports (from its declaration)."""
    from ..backends import REGISTRY, installed_backends

    solver_mods = [m for name in installed_backends() for m in REGISTRY[name].REQUIRED_MODULES]
    return _PRELOAD + tuple(dict.fromkeys(solver_mods))


def _die_with_parent():  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the child outlives a killed worker until its time limit
        pass


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------
# the job process
# ---------------------------------------------------------------------------------------------


def _certify_spec(spec: dict) -> dict:
    """Certify the job's model; the result fields of a finished certification."""
    import warnings

    from ..api import CertificationWarning, certify
    from ..errors import ModelLoadError

    if file_hash(spec["model"]) != spec["model_hash"]:
        raise ModelLoadError(f"{spec['model']}: the file changed since the manifest was read (hash differs)")
    model = spec["model"]
    if spec.get("model_class"):
        from ..io import load_with_class

        model = load_with_class(model, spec["model_class"], spec.get("model_args"), spec.get("input_shape"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CertificationWarning)
        region = None
        if spec.get("region"):
            from ..local import parse_region

            region = parse_region(spec["region"])
        cert = certify(model, norm=spec["norm"], method=spec["method"], solver=spec["solver"],
                       output=spec["output"], lower=spec["lower"], activation=spec["activation"], region=region)
    return {"status": "ok" if cert.verified else "unverified", "error_type": None,
            "error": None if cert.verified else f"bound not verified: {cert.message}",
            "certificate": cert.to_dict()}


def _job_main(spec: dict) -> None:
    """Body of one job's process (forked from the zygote): certify, write the result JSON."""
    import resource
    import traceback

    out = {"status": "failed", "error_type": "error", "error": "", "certificate": None}
    try:
        from ..errors import InvalidNetworkError, ModelLoadError

        base = _vm_bytes()
        out["vm_base"] = base
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if spec.get("memory_limit"):
            lim = int(spec["memory_limit"])
            resource.setrlimit(resource.RLIMIT_AS, (min(lim, hard) if hard >= 0 else lim, hard))
        try:
            out.update(_certify_spec(spec))
        except MemoryError as exc:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))  # room to report
            out.update(error_type="memory", error=(
                f"memory limit exceeded: the job needed more than memory_limit={spec.get('memory_limit')} bytes "
                f"of address space (the process held {base} bytes before the job started; "
                f"{type(exc).__name__}: {exc}); raise memory_limit or try method='layer'"))
        except (ModelLoadError, InvalidNetworkError) as exc:
            out.update(error_type="load", error=f"{type(exc).__name__}: {exc}")
        except LipSDPError as exc:
            out.update(error_type="lipsdp", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        out.update(error_type="error", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
    out["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["lipsdp_version"] = __version__
    tmp = spec["result_path"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh)
    os.replace(tmp, spec["result_path"])


# ---------------------------------------------------------------------------------------------
# the launcher (zygote) process
# ---------------------------------------------------------------------------------------------


def _run_child(spec: dict) -> None:
    """In the forked child: redirect stdio, run the job, leave with ``os._exit``."""
    import traceback

    code = 1
    try:
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(spec["stderr_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        _job_main(spec)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _wait_child(pid: int, fin):
    """Wait for the job process; its wait status, or None if the worker went away (job killed)."""
    import select

    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        ready, _, _ = select.select([fin], [], [], 0.05)
        if ready and not os.read(fin.fileno(), 1):  # the worker is gone: stop the job, leave
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None


def _zygote_main() -> None:
    """A single-threaded process per worker thread that imports the certification stack once and
    forks one process per job (``{spec}`` line in → ``pid`` line, then ``exit-status`` line out).

    It exits, killing its running job, when its stdin closes (the worker died or shut down).
    """
    for mod in _preload_modules():
        try:
            __import__(mod)
        except Exception:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fin, fout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = fin.readline()
        if not line:
            return
        spec = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the job process
            _run_child(spec)
        fout.write(f"{pid}\n".encode())
        fout.flush()
        status = _wait_child(pid, fin)
        if status is None:
            return
        fout.write(f"{status}\n".encode())
        fout.flush()


class _Zygote:
    """The worker side of :func:`_zygote_main` (one per worker thread)."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from lipsdp.batch.worker import _zygote_main; _zygote_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, env=env, bufsize=0,
        )
        self.buf = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, spec: dict) -> None:
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")

    def readline(self, timeout):
        """A line from the zygote; None on timeout; RuntimeError if it died."""
        import select

        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the lipsdp job launcher on {socket.gethostname()} exited "
                                   f"(code {self.proc.poll()})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except Exception:
            self.proc.kill()


_LOCAL = threading.local()


def _zygote() -> _Zygote:
    z = getattr(_LOCAL, "zygote", None)
    if z is None or not z.alive():
        z = _LOCAL.zygote = _Zygote()
    return z


# ---------------------------------------------------------------------------------------------
# the Dask task
# ---------------------------------------------------------------------------------------------


def _launch(z: _Zygote, spec: dict, t0: float):
    """Send the job to the launcher and wait for it; (job pid, exit-status line or None, timed out)."""
    z.send(spec)
    pid = int(z.readline(120) or -1)
    if pid < 0:
        z.close()
        raise RuntimeError("the lipsdp job launcher did not answer within 120 s")
    limit = spec.get("time_limit")
    line = z.readline(None if limit is None else max(0.0, limit - (time.perf_counter() - t0)))
    timed_out = line is None
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        line = z.readline(60)
    return line, timed_out


def _died_without_result(spec: dict, status: int, stderr_path: str) -> dict:
    rc = os.waitstatus_to_exitcode(status)
    how = f"signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit code {rc}"
    with open(stderr_path, errors="replace") as fh:
        tail = fh.read()[-1500:]
    hint = (f"; with memory_limit={spec['memory_limit']} this is most likely the memory limit"
            if spec.get("memory_limit") else "")
    return {"status": "failed", "error_type": "memory" if spec.get("memory_limit") else "crash",
            "error": f"the job process died ({how}) without a result{hint}\n{tail}".rstrip()}


def _execute(spec: dict) -> dict:
    """Run one job in its own process on this worker; never raises for a job-level failure.

    A RuntimeError (the launcher died) is a fault of the worker, not of the job: :func:`run`
    resubmits such a job like one whose worker was killed.
    """
    t0 = time.perf_counter()
    row = {"host": socket.gethostname(), "worker_pid": os.getpid(), "started_at": now(),
           "lipsdp_version": __version__}
    tmpdir = tempfile.mkdtemp(prefix="lipsdp-job-")
    result_path = os.path.join(tmpdir, "result.json")
    stderr_path = os.path.join(tmpdir, "stderr.txt")
    try:
        line, timed_out = _launch(_zygote(), {**spec, "result_path": result_path, "stderr_path": stderr_path}, t0)
        if timed_out:
            row.update(status="failed", error_type="timeout",
                       error=f"time limit exceeded: killed after {spec['time_limit']:g} s; raise time_limit, "
                             "or try method='layer' or a faster solver")
        elif os.path.exists(result_path):
            with open(result_path) as fh:
                row.update(json.load(fh))
        else:
            row.update(_died_without_result(spec, int(line) if line else 0, stderr_path))
    finally:
        for name in (result_path, result_path + ".tmp", stderr_path):
            if os.path.exists(name):
                os.unlink(name)
        os.rmdir(tmpdir)
    row["seconds"] = time.perf_counter() - t0
    row["finished_at"] = now()
    return row
