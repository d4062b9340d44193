"""Packaging and public-surface guards: every subpackage is shipped, __all__ is real, the core is torch-free."""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

import lipsdp

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {"lipsdp", "lipsdp.constraints", "lipsdp.models"}
    for base, prefix in ((ROOT / "lipsdp", "lipsdp"), (ROOT / "constraints", "lipsdp.constraints"),
                         (ROOT / "models", "lipsdp.models")):
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            if rel and "__pycache__" not in rel:
                found.add(".".join((prefix, *rel)))
    assert found <= listed, f"add to setup.cfg [options] packages: {sorted(found - listed)}"


def test_public_names_resolve():
    for name in lipsdp.__all__:
        assert getattr(lipsdp, name) is not None, name


def test_core_does_not_import_torch():
    code = ("import sys, lipsdp, lipsdp.constraints, lipsdp.api, lipsdp.io, lipsdp.lower, lipsdp.check; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_constraints_and_models_are_not_top_level_names():
    """setup.cfg maps constraints/ and models/ under lipsdp.*; they must not squat generic names."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = cfg["options"]["packages"].split()
    assert "constraints" not in listed and "models" not in listed
    assert lipsdp.constraints.__name__ == "lipsdp.constraints"


# ---------------------------------------------------------------------------------------------
# issue 17: a permissively licensed core, the notebooks extra
# ---------------------------------------------------------------------------------------------

#: GPL-licensed packages a solver stack may pull in (CVXOPT GPL-3, SDPA GPL-2, ECOS GPL-3)
GPL_PACKAGES = {"cvxopt", "sdpa-python", "sdpa-multiprecision", "ecos", "glpk", "pyglpk"}


def _requirement_names(text: str) -> list[str]:
    import re

    names = []
    for line in text.strip().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_install_requires_has_no_gpl_package():
    cfg = _setup_cfg()
    core = _requirement_names(cfg["options"]["install_requires"])
    assert not GPL_PACKAGES & set(core), f"GPL packages in install_requires: {sorted(GPL_PACKAGES & set(core))}"
    extras = cfg["options.extras_require"]
    assert "cvxopt" in _requirement_names(extras["cvxopt"]) and "sdpa-python" in _requirement_names(extras["sdpa"])
    test = set(_requirement_names(extras["test"]))
    assert {"cvxopt", "sdpa-python", "onnx"} <= test  # CI still compares every backend
    for name in core:  # and the installed core packages declare no GPL licence
        assert not _is_gpl(_licence_text(name)), f"{name}: {_licence_text(name)}"
    if _licence_text("cvxopt"):  # the check recognises a GPL package
        assert _is_gpl(_licence_text("cvxopt"))


def _licence_text(name: str) -> str:
    """Licence name(s) an installed distribution declares ("" if it is not installed)."""
    from importlib import metadata

    try:
        meta = metadata.metadata(name)
    except metadata.PackageNotFoundError:
        return ""
    head = (meta.get("License") or "")[:400]  # the licence's own name comes first; scipy's text later lists bundled code
    return " ".join([head, meta.get("License-Expression") or ""]
                    + [c for c in meta.get_all("Classifier") or [] if c.startswith("License")])


def _is_gpl(text: str) -> bool:
    text = text.replace("LGPL", "").replace("Lesser General Public", "")
    return "GPL" in text or "General Public License" in text


#: the one other place that may import cvxopt, lazily: the sparse check uses the CHOLMOD bundled
#: with it as an optional factorisation engine (a linear-algebra library, not the solver); its
#: core engine is QDLDL (Apache-2.0), tested with and without cvxopt in tests/test_check_sparse.py
CVXOPT_OPTIONAL_USERS = {"lipsdp/check_sparse.py"}


def test_nothing_outside_the_backends_imports_cvxopt():
    """CVXOPT is optional: only lipsdp/backends/ may name it in an import (lazily, when chosen)."""
    import ast

    offenders = []
    for base in (ROOT / "lipsdp", ROOT / "constraints", ROOT / "models"):
        for path in base.rglob("*.py"):
            if "backends" in path.relative_to(ROOT).parts:
                continue
            if str(path.relative_to(ROOT)) in CVXOPT_OPTIONAL_USERS:
                assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) and "cvxopt" in ast.dump(n)
                               for n in ast.parse(path.read_text()).body), f"{path}: cvxopt imported at module level"
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] == "cvxopt" for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"cvxopt imported outside lipsdp/backends/: {offenders}"


def _notebook_imports() -> set[str]:
    import ast
    import json

    mods = set()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, ast.Import):
                    mods.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    mods.add(node.module.split(".")[0])
    return mods


def test_notebooks_extra_covers_every_notebook_import():
    from importlib import metadata

    cfg = _setup_cfg()
    provided = set(_requirement_names(cfg["options"]["install_requires"]))
    provided |= set(_requirement_names(cfg["options.extras_require"]["notebooks"]))
    assert {"ipykernel", "jupyterlab"} <= provided  # a kernel and the front end the README opens
    dists = metadata.packages_distributions()
    missing = []
    for mod in sorted(_notebook_imports() - set(sys.stdlib_module_names) - {"lipsdp"}):
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [])}
        if not names:
            missing.append(f"{mod} (not installed here, so its distribution is unknown)")
        elif not names & provided:
            missing.append(f"{mod} (from {sorted(names)})")
    assert not missing, f"add to the 'notebooks' extra in setup.cfg: {missing}"
    assert {"torch", "matplotlib", "sklearn"} <= _notebook_imports()  # the parser sees the imports


def _fresh_venv(tmp_path, spec: str):
    import os

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", spec], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return py, env


@pytest.mark.slow
def test_core_install_alone_certifies_the_demo_without_cvxopt(tmp_path):
    """``pip install torch==2.13.0 .`` in a fresh venv: no GPL package arrives, and the demo
    certifies (the default solver choice must not need CVXOPT)."""
    py, env = _fresh_venv(tmp_path, str(ROOT))
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout
    installed = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}
    assert not GPL_PACKAGES & installed, sorted(GPL_PACKAGES & installed)
    code = ("import importlib.util, lipsdp, lipsdp.cli as c; assert importlib.util.find_spec('cvxopt') is None; "
            "cert = lipsdp.certify(c.demo_path()); print(cert.verified, cert.solver, cert.bound)")
    res = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    verified, solver, bound = res.stdout.split()
    assert verified == "True" and solver != "cvxopt"


@pytest.mark.slow
def test_notebooks_run_from_a_venv_holding_only_the_notebooks_extra(tmp_path):
    py, env = _fresh_venv(tmp_path, f"{ROOT}[notebooks]")
    code = ("import sys, nbformat; from nbclient import NotebookClient\n"
            "for path in sys.argv[1:]:\n"
            "    nb = nbformat.read(path, as_version=4)\n"
            "    NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': sys.argv[1].rsplit('/', 1)[0]}}).execute()\n"
            "    print('ok', path)\n")
    kernel = subprocess.run([str(py), "-m", "ipykernel", "install", "--name", "python3", "--prefix",
                             str(tmp_path / "kernels")], env=env, capture_output=True, text=True)
    assert kernel.returncode == 0, kernel.stderr[-2000:]
    env = dict(env, JUPYTER_PATH=str(tmp_path / "kernels" / "share" / "jupyter"))
    nbs = [str(p) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    res = subprocess.run([str(py), "-c", code, *nbs], env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("ok ") == len(nbs)
