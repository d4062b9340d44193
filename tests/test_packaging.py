"""Packaging and public-surface guards: every subpackage is shipped, __all__ is real, the core is torch-free."""

import configparser
import subprocess
import sys
from pathlib import Path

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
