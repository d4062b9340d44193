"""lipsdp.batch: manifest validation, the Dask runner's fault handling, the SQLite store, CLI.

The cluster tests share one LocalCluster of 2 worker processes (lipsdp.batch.local_cluster).
Networks are tiny random ReLU nets (3-6-6-2, Gaussian weights) written to tmp_path; their bounds
are checked for soundness against the sampled lower bound (the Certificate's own
``lower_bound``) and the product of norms, not against golden values.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed", reason="lipsdp[batch] extra (dask[distributed]) not installed")
pytest.importorskip("pandas", reason="lipsdp[batch] extra (pandas) not installed")
pytest.importorskip("yaml", reason="lipsdp[batch] extra (pyyaml) not installed")

from lipsdp import batch  # noqa: E402
from lipsdp.batch import BatchError, ManifestError  # noqa: E402


def write_nets(folder, n, seed=0, dims=(3, 6, 6, 2)):
    paths = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        ws = {f"W{k}": rng.standard_normal((dims[k + 1], dims[k])) for k in range(len(dims) - 1)}
        p = folder / f"net{seed + i:03d}.npz"
        np.savez(p, **ws)
        paths.append(p)
    return paths


def rows_in(store):
    with sqlite3.connect(store) as conn:
        return conn.execute("SELECT job_key, status, attempts, certificate, finished_at FROM results").fetchall()


# ---------------------------------------------------------------------------------------------
# manifest (no cluster)
# ---------------------------------------------------------------------------------------------


def test_yaml_manifest_expands_globs_and_products(tmp_path):
    write_nets(tmp_path, 3)
    (tmp_path / "m.yaml").write_text(
        "defaults:\n  solver: cvxopt\n  time_limit: 2m\n  memory_limit: 2GB\n"
        "jobs:\n"
        "  - model: net*.npz\n    method: [neuron, layer]\n    output: [null, 1, [1, -1]]\n"
        "  - model: net000.npz\n    solver: scs\n    time_limit: 30\n"
        "  - model: net000.npz\n    method: neuron\n"  # duplicate of a job above: runs once
    )
    jobs = batch.load_manifest(tmp_path / "m.yaml")
    assert len(jobs) == 3 * 2 * 3 + 1
    assert {j.output for j in jobs} == {None, 1, (1.0, -1.0)}
    assert all(j.time_limit in (120.0, 30.0) and j.memory_limit == 2 * 10**9 for j in jobs)
    assert len({j.key for j in jobs}) == len(jobs)
    assert jobs[-1].solver == "scs" and jobs[-1].source.endswith("m.yaml:9")
    # the key depends on the model's bytes and the parameters, not on the limits or the path
    j = jobs[0]
    assert batch.Job(**{**j.__dict__, "time_limit": 5.0, "model": "/elsewhere.npz"}).key == j.key
    assert batch.Job(**{**j.__dict__, "norm": "linf"}).key != j.key


def test_csv_manifest(tmp_path):
    write_nets(tmp_path, 2)
    (tmp_path / "m.csv").write_text(
        "model,norm,method,solver,output,time_limit,memory_limit\n"
        "net*.npz,l2,neuron|layer,cvxopt,,60,1GiB\n"
        'net001.npz,l2,neuron,auto,"[1,-1]",,\n'
    )
    jobs = batch.load_manifest(tmp_path / "m.csv")
    assert len(jobs) == 2 * 2 + 1
    assert jobs[0].memory_limit == 2**30 and jobs[-1].output == (1.0, -1.0) and jobs[-1].time_limit is None


def test_bad_rows_reported_with_line_numbers(tmp_path):
    write_nets(tmp_path, 1)
    (tmp_path / "bad.yaml").write_text(
        "jobs:\n"
        "  - model: net000.npz\n"          # line 2: fine
        "  - model: net000.npz\n"          # line 3
        "    norm: l3\n"
        "  - model: nothing-*.npz\n"       # line 5
        "  - model: net000.npz\n"          # line 6
        "    time_limt: 5\n"
        "  - model: net000.npz\n"          # line 8
        "    memory_limit: lots\n"
    )
    with pytest.raises(ManifestError) as info:
        batch.load_manifest(tmp_path / "bad.yaml")
    msg = str(info.value)
    assert "4 bad manifest row(s)" in msg and "nothing was run" in msg
    assert "bad.yaml:3: unknown norm 'l3'; valid: l2, linf" in msg
    assert "bad.yaml:5: model glob 'nothing-*.npz' matches no file" in msg
    assert "bad.yaml:6: unknown field(s) ['time_limt']" in msg
    assert "bad.yaml:8: memory_limit must be" in msg
    assert "bad.yaml:2" not in msg

    (tmp_path / "bad.csv").write_text("model,norm\nnet000.npz,l2\n\nnet000.npz,l2,extra\nnet000.npz,sup\n")
    with pytest.raises(ManifestError, match=r"bad.csv:4: expected 2 cells, got 3"):
        batch.load_manifest(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("model,norm\nnet000.npz,l2\nnet000.npz,sup\n")
    with pytest.raises(ManifestError, match=r"bad2.csv:3: unknown norm 'sup'"):
        batch.load_manifest(tmp_path / "bad2.csv")
    (tmp_path / "syntax.yaml").write_text("jobs:\n  - model: [a\n  - b\n")
    with pytest.raises(ManifestError, match=r"syntax.yaml:\d+: not valid YAML"):
        batch.load_manifest(tmp_path / "syntax.yaml")


def test_cli_rejects_bad_manifest_before_running(tmp_path, capsys):
    from lipsdp.cli import main

    write_nets(tmp_path, 1)
    (tmp_path / "m.yaml").write_text("- model: net000.npz\n- model: net000.npz\n  method: network\n")
    out = tmp_path / "r.sqlite"
    assert main(["batch", str(tmp_path / "m.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "m.yaml:2: unknown method 'network'" in err
    assert not out.exists()  # nothing ran, no store was created


def test_import_is_cheap_and_registers_subcommand():
    code = ("import sys, lipsdp.cli as c; c._load_plugins(); "
            "print('batch' in c.SUBCOMMANDS, any(m.split('.')[0] in ('dask', 'distributed', 'pandas') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_slurm_and_pbs_job_scripts(tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed")
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("queue: debug\naccount: proj42\nwalltime: '00:30:00'\ncores: 2\nmemory: 8GB\n"
                   "job_extra_directives: ['--constraint=skylake']\n")
    cluster = batch.jobqueue_cluster("slurm", str(cfg))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p debug", "#SBATCH -A proj42", "#SBATCH -t 00:30:00", "#SBATCH --constraint=skylake",
                 "#SBATCH --cpus-per-task=2"):
        assert line in script
    assert sys.executable in script and "distributed.cli.dask_worker" in script
    pbs = batch.jobqueue_cluster("pbs", {"queue": "workq", "walltime": "01:00:00"})
    try:
        assert "#PBS -q workq" in pbs.job_script()
    finally:
        pbs.close()
    with pytest.raises(BatchError, match="cannot build a SLURMCluster"):
        batch.jobqueue_cluster("slurm", {"not_a_parameter": 1})
    with pytest.raises(BatchError, match="unknown --cluster 'lsf'"):
        batch.jobqueue_cluster("lsf", {})


# ---------------------------------------------------------------------------------------------
# on a LocalCluster of 2 worker processes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    import distributed

    cluster = batch.local_cluster(2)
    c = distributed.Client(cluster)
    c.wait_for_workers(2, timeout=120)
    yield c
    c.close()
    cluster.close()


def test_killed_worker_every_job_stored_once(tmp_path, client):
    nets = write_nets(tmp_path, 10)
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    jobs = [{"model": str(p), "method": ["neuron", "layer"], "solver": "cvxopt", "lower": False} for p in nets]
    jobs.append({"model": str(tmp_path / "broken.npz"), "solver": "cvxopt"})
    store = tmp_path / "r.sqlite"
    killed = []

    def kill_one(job, row):
        if killed:
            return
        pids = client.run(os.getpid)
        busy = [w for w, keys in client.processing().items() if keys]
        assert busy, "both workers idle with jobs left: cannot test a kill mid-job"
        os.kill(pids[busy[0]], signal.SIGKILL)
        killed.append(pids[busy[0]])

    df = batch.run(jobs, client=client, store=store, retries=2, progress=False, on_result=kill_one)
    assert killed
    assert len(df) == 21 and df["job_key"].is_unique
    stored = rows_in(store)
    assert len(stored) == 21 and len({r[0] for r in stored}) == 21
    bad = df[df["model_path"].str.endswith("broken.npz")].iloc[0]
    assert bad["status"] == "failed" and bad["error_type"] == "load" and "broken.npz" in bad["error"]
    good = df[~df["model_path"].str.endswith("broken.npz")]
    assert (good["status"] == "ok").all()
    # the job that was running on the killed worker was resubmitted and stored once
    assert good["attempts"].max() >= 2
    assert set(good.loc[good["attempts"] >= 2, "worker_pid"]).isdisjoint(killed)
    # soundness: LipSDP-Neuron <= LipSDP-Layer <= product of norms, for each net
    for path, g in good.groupby("model_path"):
        b = dict(zip(g["method"], g["bound"]))
        cert = json.loads(g["certificate"].iloc[0])
        assert b["neuron"] <= b["layer"] * (1 + 1e-6) and b["layer"] <= cert["naive_bound"] * (1 + 1e-6)


def test_resume_after_interrupted_run(tmp_path, client):
    nets = write_nets(tmp_path, 6, seed=100)
    jobs = [{"model": str(p), "solver": "cvxopt"} for p in nets]
    store = tmp_path / "r.sqlite"
    seen = []

    def interrupt(job, row):
        seen.append(job.key)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        batch.run(jobs, client=client, store=store, progress=False, on_result=interrupt)
    first = rows_in(store)
    assert 2 <= len(first) < 6  # stopped early; every stored row is complete
    assert all(r[1] == "ok" and json.loads(r[3])["verified"] for r in first)
    with pytest.raises(BatchError, match="already holds 2 of these 6 jobs; pass resume=True"):
        batch.run(jobs, client=client, store=store, progress=False)
    df = batch.run(jobs, client=client, store=store, resume=True, progress=False)
    assert len(df) == 6 and (df["status"] == "ok").all()
    after = {r[0]: r for r in rows_in(store)}
    assert len(after) == 6
    assert all(after[r[0]] == r for r in first)  # earlier rows untouched
    # sound against the sampled lower bound stored with each certificate
    for c in df["certificate"].map(json.loads):
        assert c["lower_bound"] <= c["bound"] * (1 + 1e-9) <= c["naive_bound"] * (1 + 1e-6)
    # nothing left to do: no job is submitted
    df2 = batch.run(jobs, client=client, store=store, resume=True, progress=False)
    assert list(df2["job_key"]) == list(df["job_key"])


def test_time_and_memory_limits(tmp_path, client):
    small = write_nets(tmp_path, 1, seed=200)[0]
    # 20-50-50-50-10: Clarabel needs minutes here (notes/anchors.md: 116-201 s) -> certainly over 2 s
    big = write_nets(tmp_path, 1, seed=300, dims=(20, 50, 50, 50, 10))[0]
    jobs = [
        batch.expand([{"model": str(big), "solver": "clarabel", "time_limit": 2, "lower": False}])[0],
        batch.expand([{"model": str(small), "solver": "cvxopt", "memory_limit": "50MB"}])[0],
        batch.expand([{"model": str(small), "solver": "scs", "memory_limit": "64GB"}])[0],
    ]
    t0 = time.perf_counter()
    df = batch.run(jobs, client=client, store=tmp_path / "r.sqlite", progress=False).set_index("solver")
    assert time.perf_counter() - t0 < 60
    slow = df.loc["clarabel"]
    assert slow["status"] == "failed" and slow["error_type"] == "timeout" and "killed after 2 s" in slow["error"]
    assert 2.0 <= slow["seconds"] < 15
    tight = df.loc["cvxopt"]
    assert tight["status"] == "failed" and tight["error_type"] == "memory", tight["error"]
    assert "memory_limit=50000000" in tight["error"]
    roomy = df.loc["scs"]
    assert roomy["status"] == "ok" and roomy["memory_limit"] == 64 * 10**9


@pytest.mark.slow
def test_cli_local_cluster_ctrl_c_and_resume(tmp_path):
    """The CLI with its own LocalCluster: SIGINT stops it cleanly (exit 130, complete rows only),
    --resume finishes the rest, the summary table is printed."""
    write_nets(tmp_path, 8, seed=400)
    (tmp_path / "m.yaml").write_text("defaults:\n  solver: cvxopt\njobs:\n  - model: net*.npz\n")
    store = tmp_path / "r.sqlite"
    cmd = [sys.executable, "-m", "lipsdp", "batch", str(tmp_path / "m.yaml"), "--out", str(store), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if store.exists() and len(rows_in(store)) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    n = len(rows_in(store))
    assert 2 <= n < 8
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "8 jobs — ok: 8" in res.stdout
    assert f"{8 - n} to run" in res.stderr
    assert len(rows_in(store)) == 8


def test_progress_log_lines_and_summary(tmp_path):
    import io

    net = write_nets(tmp_path, 1)[0]
    job = batch.expand([{"model": str(net)}])[0]
    stream = io.StringIO()  # not a terminal: plain log lines
    p = batch._Progress(2, lambda: 2, stream=stream)
    assert p.mode == "log"
    p.update(job, {"status": "ok", "certificate": {"bound": 3.25}, "seconds": 1.5, "host": "h"}, 1)
    p.update(job, {"status": "failed", "error_type": "timeout", "error": "time limit exceeded: killed after 2 s",
                   "seconds": 2.0, "host": "h"}, 2)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("lipsdp batch: [1/2] ok") and "bound 3.25" in lines[0]
    assert "[2/2] failed" in lines[1] and "timeout: time limit exceeded" in lines[1] and "attempt 2" in lines[1]
    store = batch.Store(tmp_path / "r.sqlite")
    store.write(job, {"status": "failed", "error_type": "load", "error": "boom"}, 1)
    store.write(job, {"status": "ok", "certificate": {"bound": 2.0, "verified": True, "solver": "cvxopt"}}, 2)
    store.write(job, {"status": "failed", "error_type": "load", "error": "late"}, 3)  # never overwrites a result
    df = store.dataframe([job.key])
    store.close()
    assert len(df) == 1 and df.loc[0, "status"] == "ok" and df.loc[0, "attempts"] == 2
    text = batch.summary(df)
    assert text.startswith("1 jobs — ok: 1  unverified: 0  failed: 0") and "net000.npz" in text


def test_cli_existing_scheduler(tmp_path, client, capsys):
    from lipsdp.cli import main

    write_nets(tmp_path, 2, seed=500)
    (tmp_path / "m.csv").write_text("model,solver,lower\nnet*.npz,cvxopt,false\n")
    out = tmp_path / "r.sqlite"
    args = ["batch", str(tmp_path / "m.csv"), "--out", str(out), "--scheduler", client.scheduler.address]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2 jobs — ok: 2  unverified: 0  failed: 0" in text and "net500.npz" in text
    assert main(args) == 2  # already stored, no --resume
    assert "already holds 2 of these 2 jobs" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert len(rows_in(out)) == 2


# ---------------------------------------------------------------------------------------------
# model classes, ONNX and the store path (issue 17)
# ---------------------------------------------------------------------------------------------


def test_cli_refuses_unwritable_store_before_anything_runs(tmp_path, capsys):
    from lipsdp.cli import main

    write_nets(tmp_path, 1)
    (tmp_path / "m.yaml").write_text("- model: net000.npz\n")
    out = tmp_path / "missing-dir" / "r.sqlite"
    assert main(["batch", str(tmp_path / "m.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing-dir" in err and "Traceback" not in err
    with pytest.raises(BatchError.__mro__[1], match="does not exist"):  # LipSDPError, from run() too
        batch.run(str(tmp_path / "m.yaml"), store=out, progress=False)


def test_manifest_model_class_fields_are_validated(tmp_path):
    write_nets(tmp_path, 1)
    (tmp_path / "m.yaml").write_text(
        "- model: net000.npz\n  model_class: nothere.py:Net\n"
        "- model: net000.npz\n  model_class: Net\n"
        "- model: net000.npz\n  input_shape: [1, 5, 5]\n"
        "- model: net000.npz\n  model_class: pkg.mod:Net\n  model_args: 3\n"
    )
    with pytest.raises(ManifestError) as info:
        batch.load_manifest(tmp_path / "m.yaml")
    text = str(info.value)
    assert "m.yaml:1: model_class file 'nothere.py' does not exist" in text
    assert "m.yaml:3: model_class must be path/to/file.py:ClassName" in text
    assert "m.yaml:5: model_args and input_shape need model_class" in text
    assert "m.yaml:7: model_args must be a mapping" in text


def test_manifest_with_model_class_and_onnx_runs_in_batch(tmp_path, client):
    torch = pytest.importorskip("torch", reason="torch not installed")
    pytest.importorskip("onnx", reason="lipsdp[onnx] extra (onnx) not installed")
    import warnings

    import lipsdp
    from tests.test_cli_inputs import write_checkpoint

    _, module = write_checkpoint(tmp_path, channels=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 1, 5, 5),), str(tmp_path / "net.onnx"), dynamo=False)
    (tmp_path / "m.yaml").write_text(
        "defaults:\n  solver: clarabel\n  lower: false\n"
        "jobs:\n"
        "  - model: ckpt.pt\n    model_class: netdef.py:Net\n    model_args: {channels: 3}\n    input_shape: [1, 5, 5]\n"
        "  - model: net.onnx\n"
    )
    jobs = batch.load_manifest(tmp_path / "m.yaml")
    assert jobs[0].model_class == f"{tmp_path / 'netdef.py'}:Net" and jobs[0].input_shape == (1, 5, 5)
    df = batch.run(jobs, client=client, store=tmp_path / "r.sqlite", progress=False)
    want = lipsdp.certify(module, input_shape=(1, 5, 5), solver="clarabel", lower=False).bound
    assert list(df["status"]) == ["ok", "ok"], list(df["error"])
    assert df["bound"].tolist() == pytest.approx([want, want], rel=1e-6)


def test_manifest_region_runs_local_bounds_in_batch(tmp_path, client):
    """A manifest `region` (the CLI's spec; files relative to the manifest) gives the same checked
    local bound as lipsdp.certify(region=...); editing the centre file changes the job key."""
    import lipsdp
    from lipsdp.cli import demo_path
    from lipsdp.local import L2Ball

    x0 = np.random.default_rng(1).uniform(0, 16, 64)
    np.save(tmp_path / "x0.npy", x0)
    (tmp_path / "m.yaml").write_text(
        f"defaults:\n  solver: native\n  lower: false\njobs:\n  - model: {demo_path()}\n    region: l2:0.1:x0.npy\n"
        f"  - model: {demo_path()}\n")
    jobs = batch.load_manifest(tmp_path / "m.yaml")
    assert jobs[0].region == f"l2:0.1:{tmp_path / 'x0.npy'}" and jobs[1].region is None
    df = batch.run(jobs, client=client, store=tmp_path / "r.sqlite", progress=False)
    assert list(df["status"]) == ["ok", "ok"], list(df["error"])
    want = lipsdp.certify(demo_path(), region=L2Ball(x0, 0.1), solver="native", lower=False).bound
    # the worker runs BLAS single-threaded: native stops "optimal_inaccurate" on this local LMI at a
    # slightly different point (checked 32.86029 vs 32.86059 in-process), both checked bounds
    assert df["bound"].tolist()[0] == pytest.approx(want, rel=1e-4)
    assert df["bound"].tolist()[0] <= df["bound"].tolist()[1] * (1 + 1e-9)  # local ≤ global
    np.save(tmp_path / "x0.npy", x0 + 1.0)
    assert batch.load_manifest(tmp_path / "m.yaml")[0].key != jobs[0].key
    (tmp_path / "bad.yaml").write_text(f"jobs:\n  - model: {demo_path()}\n    region: ball:1\n")
    with pytest.raises(batch.ManifestError, match="region"):
        batch.load_manifest(tmp_path / "bad.yaml")
