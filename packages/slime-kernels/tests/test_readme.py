"""The README's usage example runs as written, and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    (code,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    out, erank = namespace["out"], namespace["erank"]
    assert out.shape == (2, 4, 128, 64) and torch.isfinite(out).all()
    assert torch.equal(out[:, 2], torch.zeros_like(out[:, 2]))
    for x in (namespace[name] for name in "qkv"):
        assert torch.isfinite(x.grad).all() and x.grad[:, [0, 1, 3]].abs().sum() > 0
        assert torch.equal(x.grad[:, 2], torch.zeros_like(x.grad[:, 2]))
    assert erank.shape == (4,) and erank.dtype == torch.float32
    # A dead slot's zero features are uncorrelated: its correlation is the identity, rank d.
    torch.testing.assert_close(erank[2], torch.tensor(64.0), atol=1e-3, rtol=0)
