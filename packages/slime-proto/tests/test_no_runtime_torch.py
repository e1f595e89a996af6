"""slime.proto imports no torch (nor numpy) at run time: checked in a clean interpreter."""

from __future__ import annotations

import subprocess
import sys


def test_importing_proto_loads_no_torch() -> None:
    code = (
        "import sys, slime.proto, slime.proto.testing;"
        "bad = sorted(m for m in ('torch', 'numpy', 'triton') if m in sys.modules);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"slime.proto imported {result.stdout.strip()}"
