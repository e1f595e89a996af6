"""Launching a ``@triton.jit`` kernel again without Triton's per-call dispatcher.

``kernel[grid](*args)`` re-derives the kernel's specialisation from every argument, builds a
cache key string and reads several settings on each call: about 21 us of host time per launch on
the H200's host (BENCHMARKS.md), four launches per eager forward+backward. The first launch of
each specialisation here goes through that dispatcher, which compiles or loads the kernel and
returns its ``CompiledKernel``; later launches with the same key call the handle directly.

The key holds more than Triton specialises on: every int argument's exact value (Triton looks at
``== 1``, divisibility by 16 and the int32 range), each tensor's dtype and 16-byte alignment,
the constexprs and launch options, and the current device. The handle takes every argument in
signature order, constexprs included, as the dispatcher passes them since Triton 3.3 (before, it
passed the non-constexpr ones only): an older Triton, or a handle whose source signature does not
list every parameter, keeps the dispatcher. Under ``TRITON_INTERPRET=1`` there is nothing to
cache.
"""

from __future__ import annotations

import os

import torch
import triton
from torch import Tensor

__all__ = ["MAX_HANDLES", "Launcher"]

MAX_HANDLES = 1024  # keys per kernel before the cache starts over (each holds a shared handle)


def passes_every_argument(version: str) -> bool:
    """Whether Triton ``version``'s compiled handles take constexprs too (3.3 and later)."""
    major, minor = (
        int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:2]
    )
    return (major, minor) >= (3, 3)


class Launcher:
    """``Launcher(kernel)(grid, *args, **constexprs_and_options)``: ``kernel[grid](...)``, cached.

    Positional ``args`` are the kernel's leading non-constexpr parameters: tensors, ints and
    floats, each position keeping its type from call to call (the key compares values, and
    ``1 == 1.0 == True``). Every constexpr goes by keyword, with the launch options
    (``num_warps``, ``num_stages``). Whether the kernels run in the interpreter is read once, as
    Triton reads it when the ``@triton.jit`` decorators run; ``cached`` is False there and on a
    Triton before 3.3.
    """

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.names = tuple(kernel.arg_names)
        self.handles: dict = {}
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        self.cached = not interpreted and passes_every_argument(triton.__version__)

    def __call__(self, grid: tuple[int, ...], *args, **constexprs) -> None:
        if not self.cached:
            self.kernel[grid](*args, **constexprs)
            return
        # Inline, not a helper per argument: this line is most of the cached launch's host time.
        key = (
            torch.cuda.current_device(),
            *constexprs.items(),
            *[(a.dtype, a.data_ptr() % 16) if isinstance(a, Tensor) else a for a in args],
        )
        handle = self.handles.get(key)
        if handle is not None:
            tail = [constexprs[name] for name in self.names[len(args) :]]
            handle[(*grid, 1, 1)[:3]](*args, *tail)
            return
        handle = self.kernel[grid](*args, **constexprs)
        source = getattr(handle, "src", None)
        if set(getattr(source, "signature", ())) == set(self.names):
            if len(self.handles) >= MAX_HANDLES:  # e.g. a sequence length that grows each call
                self.handles.clear()
            self.handles[key] = handle
