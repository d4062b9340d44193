"""CLI inputs: a state dict with its model class (--model), and output paths checked before work.

Reference for --model: the bound certified from the same torch module object in Python (same
solver, clarabel) — the CLI must rebuild exactly that network from the state dict.
"""

import json
import textwrap

import pytest

from lipsdp.cli import main

torch = pytest.importorskip("torch", reason="torch not installed")

NETDEF = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, channels=2, classes=3):
            super().__init__()
            self.conv = nn.Conv2d(1, channels, 3, stride=2, padding=1)
            self.fc = nn.Linear(channels * 3 * 3, classes)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))
""")


def write_checkpoint(folder, channels=3, seed=0):
    """netdef.py (the class) and ckpt.pt (a state dict of Net(channels=...)); returns (ckpt, module)."""
    (folder / "netdef.py").write_text(NETDEF)
    namespace = {}
    exec(compile(NETDEF, str(folder / "netdef.py"), "exec"), namespace)
    torch.manual_seed(seed)
    module = namespace["Net"](channels=channels).eval()
    torch.save(module.state_dict(), folder / "ckpt.pt")
    return folder / "ckpt.pt", module


def test_cli_model_class_certifies_a_state_dict(tmp_path, capsys):
    import lipsdp

    ckpt, module = write_checkpoint(tmp_path)
    args = ["certify", str(ckpt), "--model", f"{tmp_path / 'netdef.py'}:Net", "--model-args", '{"channels": 3}',
            "--input-shape", "1,5,5", "--solver", "clarabel", "--no-lower", "--json"]
    assert main(args) == 0
    cert = json.loads(capsys.readouterr().out)
    want = lipsdp.certify(module, input_shape=(1, 5, 5), solver="clarabel", lower=False)
    assert cert["verified"] and cert["bound"] == pytest.approx(want.bound, rel=1e-6)


@pytest.mark.parametrize("extra, pattern", [
    ([], "bare state_dict is only accepted"),  # without --model the state dict is still refused
    (["--model", "{d}/netdef.py:Nope", "--input-shape", "1,5,5"], "defines no class 'Nope'"),
    (["--model", "{d}/netdef.py:Net", "--input-shape", "1,5,5"], "does not fit Net"),  # default channels=2
    (["--model", "{d}/netdef.py:Net", "--model-args", "{{bad", "--input-shape", "1,5,5"], "not valid JSON"),
    (["--model-args", '{{"channels": 3}}'], "need --model"),
    (["--model", "{d}/netdef.py:Net", "--model-args", '{{"channels": 3}}', "--input-shape", "1,x"], "input shape"),
])
def test_cli_model_class_errors_are_one_line(tmp_path, capsys, extra, pattern):
    ckpt, _ = write_checkpoint(tmp_path)
    assert main(["certify", str(ckpt)] + [e.format(d=tmp_path) for e in extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and pattern in err and "Traceback" not in err


@pytest.mark.parametrize("option", ["--out", "--report"])
def test_cli_refuses_unwritable_output_before_solving(tmp_path, capsys, monkeypatch, option):
    import lipsdp.api

    def must_not_run(*args, **kwargs):
        raise AssertionError("certify ran although the output path is unwritable")

    monkeypatch.setattr(lipsdp.api, "certify", must_not_run)
    target = tmp_path / "missing-dir" / "c.json"
    assert main(["demo", option, str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing-dir" in err and "does not exist" in err and "Traceback" not in err
    assert not target.parent.exists()
