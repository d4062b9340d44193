"""Issue 13's structural promises, checked: a cheap torch- and plot-free `import lipsdp`, solver
names only under lipsdp/backends/, one pipeline for every model type."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import lipsdp

ROOT = pathlib.Path(lipsdp.__file__).resolve().parent
SOLVERS = {"cvxopt", "sdpa", "scs", "clarabel", "mosek", "native"}  # "chain" is also a method name
#: module names used as libraries, not as solver choices: the sparse check's optional CHOLMOD engine
#: is bundled with the cvxopt package (its table names the module to import)
LIBRARY_USES = {("check_sparse.py", "cvxopt")}


def test_import_is_cheap():
    code = ("import sys, lipsdp; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'torch', 'cvxpy', 'pandas', 'dask') or m in ('lipsdp.plot', 'lipsdp.report')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _solver_name_literals(path):
    tree = ast.parse(path.read_text())
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in SOLVERS]


def test_solver_names_only_in_backends():
    """Code outside lipsdp/backends/ never branches on a solver's name (messages may mention one
    inside a longer sentence; a bare name as a string literal is a rule keyed by solver)."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        if "backends" in path.relative_to(ROOT).parts:
            continue
        rel = str(path.relative_to(ROOT))
        offenders += [f"{rel}:{line}: {name!r}" for line, name in _solver_name_literals(path)
                      if (rel, name) not in LIBRARY_USES]
    assert not offenders, "solver names outside lipsdp/backends/:\n" + "\n".join(offenders)


def test_rewrites_are_recorded_and_inverted():
    rng = np.random.default_rng(0)
    net = lipsdp.Network([lipsdp.Affine(rng.standard_normal((6, 10))), lipsdp.SlopeRestricted("relu"),
                          lipsdp.Affine(rng.standard_normal((6, 6))), lipsdp.MaxMin(),
                          lipsdp.Affine(rng.standard_normal((3, 6)))])
    cert = lipsdp.certify(net, solver="native", lower=False)
    assert cert.verified
    assert cert.rewrites == ["normalise", "input-reduction", "subspace", "margin"]
    relu = lipsdp.Network([lipsdp.Affine(rng.standard_normal((6, 10))), lipsdp.SlopeRestricted("relu"),
                           lipsdp.Affine(rng.standard_normal((6, 6))), lipsdp.SlopeRestricted("relu"),
                           lipsdp.Affine(rng.standard_normal((3, 6)))])
    mono = lipsdp.certify(relu, solver="native", lower=False)
    dec = lipsdp.certify(relu, solver="clarabel", decompose=True, lower=False)
    assert dec.rewrites == ["normalise", "input-reduction", "margin", "chordal"]
    assert mono.verified and dec.verified
    assert dec.bound == pytest.approx(mono.bound, rel=1e-5)  # the decomposition is exact


def test_linf_all_outputs_is_one_formulation_with_parts():
    from lipsdp.formulations import MaxOverOutputs, formulation_for

    rng = np.random.default_rng(1)
    net = lipsdp.Network([lipsdp.Affine(rng.standard_normal((5, 4))), lipsdp.SlopeRestricted("relu"),
                          lipsdp.Affine(rng.standard_normal((3, 5)))])
    form = formulation_for(net, "linf", "neuron")
    assert isinstance(form, MaxOverOutputs) and len(form.parts()) == 3
    # every option reaches the parts: an impossible memory limit is enforced, a bad decompose refused
    with pytest.raises(lipsdp.errors.MemoryLimitError):
        lipsdp.certify(net, norm="linf", memory_limit=100)
    with pytest.raises(lipsdp.errors.FormulationError, match="decompose"):
        lipsdp.certify(net, norm="linf", decompose="bogus")
    cert = lipsdp.certify(net, norm="linf", solver="native")
    per = [lipsdp.certify(net, norm="linf", output=k, solver="native", lower=False).bound for k in range(3)]
    assert cert.verified and cert.bound == pytest.approx(max(per), rel=1e-6)
    assert cert.per_output == pytest.approx(per, rel=1e-6)


def test_loading_options_raise_where_they_do_not_apply():
    net = lipsdp.load(str(ROOT / "data" / "demo_digits.npz"))
    for kw in ({"input_shape": (64,)}, {"activation": "tanh"}, {"allow_pickle": True}):
        with pytest.raises(lipsdp.errors.FormulationError, match="does not apply"):
            lipsdp.certify(net, lower=False, **kw)
    with pytest.raises(lipsdp.errors.FormulationError, match="does not apply"):
        lipsdp.certify([np.eye(2), np.eye(2)], input_shape=(2,))
