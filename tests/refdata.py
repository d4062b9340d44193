"""Where the shared reference networks live ($LIPSDP_REFDATA, ../shared/refdata next to the
checkout, or /work/shared/refdata).

Tests that need them skip with a reason when the folder is absent.
"""

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_CANDIDATES = [os.environ.get("LIPSDP_REFDATA"), _HERE.parent.parent / "shared" / "refdata", "/work/shared/refdata"]
REFDATA = next((Path(p) for p in _CANDIDATES if p and Path(p).is_dir()), Path("/work/shared/refdata"))
LIPSDP = REFDATA / "LipSDP"
MAXMIN = REFDATA / "QCs_MaxMin" / "networks_weights"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference file {path} not found (set LIPSDP_REFDATA to the shared refdata folder)")
    return path
