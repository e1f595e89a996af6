"""The cached Triton launcher, against a stand-in for Triton's dispatcher and compiled handles.

On the CPU the attention kernels run in the interpreter, which has nothing to cache; the GPU
tests run every Triton case through the cache. Here the launcher's own rules are checked: when
it calls the dispatcher, when a cached handle, and with which arguments.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from slime.kernels import _triton_launch
from slime.kernels._triton_launch import Launcher, passes_every_argument

NAMES = ("X", "n", "scale", "BLOCK", "FLAG")  # two constexprs last, as in the attention kernels


class _Kernel:
    """Triton's ``kernel[grid](...)``: records the call, returns a compiled handle whose source
    signature lists ``signature`` (every parameter, as Triton >= 3.3 does)."""

    def __init__(self, signature=NAMES):
        self.arg_names, self.signature, self.calls = list(NAMES), signature, []

    def __getitem__(self, grid):
        def dispatch(*args, **kwargs):
            self.calls.append(("dispatch", grid, args, kwargs))
            return _Handle(self)

        return dispatch


class _Handle:
    def __init__(self, kernel):
        self.src = SimpleNamespace(signature=dict.fromkeys(kernel.signature, "t"))
        self.kernel = kernel

    def __getitem__(self, grid):
        return lambda *args: self.kernel.calls.append(("handle", grid, args))


@pytest.fixture
def compiled(monkeypatch):
    """A launcher built as on a GPU: no interpreter, device 0."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return lambda signature=NAMES: Launcher(_Kernel(signature))


CONSTEXPRS = {"BLOCK": 32, "FLAG": True, "num_warps": 4}


def test_second_launch_calls_the_handle_with_every_argument_in_signature_order(compiled):
    launch = compiled()
    x = torch.zeros(64)
    launch((2,), x, 7, 0.5, **CONSTEXPRS)
    launch((2, 3), x, 7, 0.5, **CONSTEXPRS)
    assert [c[0] for c in launch.kernel.calls] == ["dispatch", "handle"]
    _, grid, args = launch.kernel.calls[1]
    assert grid == (2, 3, 1)
    assert args[0] is x and args[1:] == (7, 0.5, 32, True)


@pytest.mark.parametrize(
    "change",
    ["alignment", "dtype", "int", "constexpr", "option", "device"],
)
def test_anything_triton_specialises_on_dispatches_again(compiled, monkeypatch, change):
    launch = compiled()
    x = torch.zeros(64)
    launch((1,), x, 16, 0.5, **CONSTEXPRS)
    args, kwargs = [x, 16, 0.5], dict(CONSTEXPRS)
    if change == "alignment":
        args[0] = x[1:]  # 4 bytes past a 16-byte boundary
    elif change == "dtype":
        args[0] = torch.zeros(64, dtype=torch.float16)
    elif change == "int":
        args[1] = 17
    elif change == "constexpr":
        kwargs["FLAG"] = False
    elif change == "option":
        kwargs["num_warps"] = 8
    else:
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    launch((1,), *args, **kwargs)
    assert [c[0] for c in launch.kernel.calls] == ["dispatch", "dispatch"]


def test_a_handle_of_the_older_calling_convention_is_never_cached(compiled):
    launch = compiled(signature=("X", "n", "scale"))  # constexprs missing from the signature
    for _ in range(3):
        launch((1,), torch.zeros(4), 1, 0.5, **CONSTEXPRS)
    assert [c[0] for c in launch.kernel.calls] == ["dispatch"] * 3


def test_the_interpreter_always_goes_through_the_dispatcher():
    launch = Launcher(_Kernel())  # the kernels' conftest sets TRITON_INTERPRET=1
    for _ in range(2):
        launch((1,), torch.zeros(4), 1, 0.5, **CONSTEXPRS)
    assert [c[0] for c in launch.kernel.calls] == ["dispatch"] * 2
    assert not launch.handles


def test_the_cache_starts_over_at_its_bound(compiled, monkeypatch):
    monkeypatch.setattr(_triton_launch, "MAX_HANDLES", 3)
    launch = compiled()
    x = torch.zeros(4)
    for n in range(5):
        launch((1,), x, n + 2, 0.5, **CONSTEXPRS)
    assert len(launch.handles) == 2  # 3 kept, cleared at the 4th, then the 4th and 5th
    launch((1,), x, 6, 0.5, **CONSTEXPRS)
    assert launch.kernel.calls[-1][0] == "handle"


def test_a_triton_before_3_3_is_never_cached(compiled, monkeypatch):
    monkeypatch.setattr(_triton_launch.triton, "__version__", "3.2.0")
    launch = compiled()
    for _ in range(2):
        launch((1,), torch.zeros(4), 1, 0.5, **CONSTEXPRS)
    assert not launch.cached and [c[0] for c in launch.kernel.calls] == ["dispatch"] * 2


@pytest.mark.parametrize(
    ("version", "every"),
    [
        ("3.0.0", False),
        ("3.2.1", False),
        ("3.3.0", True),
        ("3.6.0", True),
        ("3.10.0+git1", True),
        ("4.0.0rc1", True),
    ],
)
def test_which_triton_versions_pass_constexprs_to_compiled_handles(version, every):
    assert passes_every_argument(version) is every
