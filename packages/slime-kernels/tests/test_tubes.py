"""The tube-ring write: the torch definition against plain math, the one-launch Triton kernel
(interpreted on CPU tensors) against the torch definition, and the checks of the entry point."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from slime.kernels import feed_tubes, torch_fallback, tube_workspace
from slime.proto import KernelError


def _plain_ratio(heads: torch.Tensor) -> list[float]:
    """Per slot, the mean over (batch, token) rows with a non-zero finite output of l1/l2."""
    out = []
    for p in range(heads.shape[1]):
        ratios = []
        for row in heads[:, p].double().reshape(-1, heads.shape[-1]):
            l1, l2 = row.abs().sum().item(), row.norm().item()
            if l2 > 0 and math.isfinite(l1 / l2):
                ratios.append(l1 / l2)
        out.append(sum(ratios) / len(ratios) if ratios else math.nan)
    return out


def _heads(dtype=torch.float32, batch=2, pool=4, seq=5, d=16, seed=0) -> torch.Tensor:
    """``(B, P, T, d)`` as attention leaves it: a transposed view of ``(B, T, P, d)``, with a
    dead slot (all zeros), a zero row in slot 0 and a NaN row in the last slot."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, pool, d, generator=gen)
    x[:, :, 1] = 0.0
    x[0, 3, 0] = 0.0
    x[1, 2, pool - 1, 5] = math.nan
    return x.to(dtype).transpose(1, 2)


def test_the_torch_definition_is_the_mean_ratio_of_nonzero_finite_rows() -> None:
    heads = _heads()
    trace = torch.full((3, 4), math.nan)
    pos = torch.tensor(2)
    torch_fallback.feed_tubes(heads, trace, pos)
    assert trace[2].tolist() == pytest.approx(_plain_ratio(heads), nan_ok=True, rel=1e-6)
    assert math.isnan(trace[2, 1]) and trace[:2].isnan().all()
    assert pos.item() == 0  # 2 + 1 wraps round a ring of 3


@pytest.mark.parametrize("chunks", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_launch_writes_what_the_torch_definition_writes(chunks, dtype) -> None:
    from slime.kernels import _triton_tubes

    heads = _heads(dtype, seed=chunks)
    want_trace, want_pos = torch.full((3, 4), math.nan), torch.tensor(1)
    trace, pos = want_trace.clone(), want_pos.clone()
    work = tube_workspace(4)
    for _ in range(4):  # round the ring and past its start
        torch_fallback.feed_tubes(heads, want_trace, want_pos)
        _triton_tubes.feed_tubes(heads, trace, pos, work, chunks=chunks)
        assert pos.item() == want_pos.item()
        torch.testing.assert_close(trace, want_trace, equal_nan=True, rtol=1e-5, atol=1e-6)
        assert not work[:5].any(), "the counters must be back at zero for the next launch"


def test_one_launch_covers_rows_beyond_one_tile_and_writes_into_a_half_ring() -> None:
    from slime.kernels import _triton_tubes

    heads = _heads(torch.float16, batch=3, pool=2, seq=50, d=20)  # 150 rows, d not a power of 2
    want = torch.full((2, 2), math.nan, dtype=torch.float16)
    got, pos, want_pos = want.clone(), torch.tensor(0), torch.tensor(0)
    torch_fallback.feed_tubes(heads, want, want_pos)
    _triton_tubes.feed_tubes(heads, got, pos, tube_workspace(2), chunks=2)
    torch.testing.assert_close(got, want, equal_nan=True)
    assert pos.item() == want_pos.item() == 1


def test_the_entry_point_runs_the_definition_off_cuda_and_skips_an_empty_ring() -> None:
    heads = _heads()
    trace, pos = torch.full((2, 4), math.nan), torch.tensor(0)
    feed_tubes(heads, trace, pos, tube_workspace(4))
    assert trace[0].tolist() == pytest.approx(_plain_ratio(heads), nan_ok=True, rel=1e-6)
    empty, pos = torch.zeros(0, 4), torch.tensor(0)
    feed_tubes(heads, empty, pos)
    assert pos.item() == 0


@pytest.mark.parametrize(
    "trace, pos, match",
    [
        (torch.zeros(2, 3), torch.tensor(0), "one column per slot"),
        (torch.zeros(2, 4), torch.tensor(0.0), "integer scalar"),
        (torch.zeros(2, 4), torch.tensor([0, 1]), "integer scalar"),
        (torch.zeros(4), torch.tensor(0), "trace must have 2 dimensions"),
    ],
)
def test_the_entry_point_refuses_what_does_not_fit(trace, pos, match) -> None:
    with pytest.raises(KernelError, match=match):
        feed_tubes(_heads(), trace, pos)


def test_a_workspace_without_triton_is_one_word_and_the_definition_runs(monkeypatch) -> None:
    from slime.kernels import functional

    monkeypatch.setattr(functional, "_HAS_TRITON", False)
    monkeypatch.setitem(sys.modules, "slime.kernels._triton_tubes", None)  # importing it fails
    work = tube_workspace(4)
    assert work.shape == (1,) and work.dtype == torch.int32
    heads, trace, pos = _heads(), torch.full((2, 4), math.nan), torch.tensor(0)
    feed_tubes(heads, trace, pos, work)
    assert pos.item() == 1 and not math.isnan(trace[0, 0])
