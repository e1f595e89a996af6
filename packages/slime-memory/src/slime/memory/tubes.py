"""TubeNetwork: bounded temporal memory whose traces fade exponentially (the Memory protocol)."""

from __future__ import annotations

import torch
from slime.memory._devices import as_device
from slime.memory.limits import MAX_TUBE_CAPACITY, MAX_TUBE_ELEMENTS
from slime.proto import ArchiveError, ConfigError, shown

__all__ = ["TubeNetwork"]


class TubeNetwork:
    """A ring buffer of the last ``capacity`` (tensor, weight) pairs, every weight fading by
    ``decay`` at each later store.

    Everything stays on the device: weights are tensors and no method reads a tensor value on the
    host, so a training step can store and recall without synchronising. Stored tensors are
    detached copies.

    Args:
        capacity: how many stores are remembered, at most
            :data:`~slime.memory.limits.MAX_TUBE_CAPACITY` (1,048,576); the oldest is
            overwritten first.
        decay: factor in ``(0, 1]`` applied to every remembered weight at each store.
        device: where the buffer lives; None means the device of the first stored tensor.

    Raises:
        ConfigError: capacity < 1 or above the limit, decay outside ``(0, 1]``, or a device
            torch cannot read.
    """

    def __init__(
        self, capacity: int, decay: float, *, device: torch.device | str | None = None
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(
                f"capacity must be a positive int, got {shown(capacity)}", "TubeNetwork.capacity"
            )
        if capacity > MAX_TUBE_CAPACITY:
            raise ConfigError(
                f"capacity {capacity} is above the limit MAX_TUBE_CAPACITY = {MAX_TUBE_CAPACITY}",
                "TubeNetwork.capacity",
            )
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0.0 < decay <= 1.0:
            raise ConfigError(f"decay must be in (0, 1], got {decay!r}", "TubeNetwork.decay")
        self._capacity = capacity
        self._decay = float(decay)
        self._device = as_device(device, "TubeNetwork.device")
        self._data: torch.Tensor | None = None  # (capacity, *shape)
        self._weights: torch.Tensor | None = None  # (capacity,) >= float32, 0 for empty slots
        self._next = 0
        self._count = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def decay(self) -> float:
        return self._decay

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Shape of the stored tensors, fixed by the first store; None before it."""
        return None if self._data is None else tuple(self._data.shape[1:])

    def __len__(self) -> int:
        return self._count

    def store(self, data: torch.Tensor, weight: float | torch.Tensor) -> None:
        """Remember ``data`` with ``weight`` (non-negative), fading what was stored before.

        A float weight is checked here; a tensor weight (0-d) is not, because checking its value
        would synchronise with the device.

        Raises:
            ArchiveError: ``data`` is not a floating tensor, has more elements than
                :data:`~slime.memory.limits.MAX_TUBE_ELEMENTS` or a shape other than the first
                store's; the weight is negative, not finite, not 0-d or complex.
        """
        if not isinstance(data, torch.Tensor):
            raise ArchiveError(f"data must be a torch.Tensor, got {type(data).__name__}")
        if not data.is_floating_point():
            raise ArchiveError(f"data must be floating point, got {data.dtype}")
        if data.layout != torch.strided:
            raise ArchiveError(f"data must be a dense tensor, got layout {data.layout}")
        if data.numel() > MAX_TUBE_ELEMENTS:  # before the buffer of capacity copies is made
            raise ArchiveError(
                f"data of shape {tuple(data.shape)} has {data.numel()} elements, above the limit "
                f"MAX_TUBE_ELEMENTS = {MAX_TUBE_ELEMENTS}"
            )
        if self._data is not None and tuple(data.shape) != self.shape:
            raise ArchiveError(
                f"data has shape {tuple(data.shape)}, but this memory stores shape {self.shape}"
            )
        # The weights' dtype: the buffer's, or the one the first store will make.
        precision = (
            self._weights.dtype
            if self._weights is not None
            else torch.promote_types(data.dtype, torch.float32)
        )
        if isinstance(weight, torch.Tensor):
            if weight.dim() != 0:
                raise ArchiveError(f"weight must be 0-d, got shape {tuple(weight.shape)}")
            if weight.is_complex():  # the cast below would drop the imaginary part
                raise ArchiveError(f"weight must be real, got a {weight.dtype} tensor")
        elif isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ArchiveError(f"weight must be a float or 0-d tensor, got {weight!r}")
        elif not (0 <= weight <= torch.finfo(precision).max):  # NaN fails too
            raise ArchiveError(f"weight must be finite and >= 0 in {precision}, got {weight!r}")
        if self._data is None:  # the first store fixes the shape: only once it is accepted
            device = self._device if self._device is not None else data.device
            self._data = torch.zeros((self._capacity, *data.shape), dtype=data.dtype, device=device)
            self._weights = torch.zeros(self._capacity, dtype=precision, device=device)
        assert self._weights is not None
        if isinstance(weight, torch.Tensor):
            weight = weight.detach().to(device=self._weights.device, dtype=self._weights.dtype)
        # Every check is above: nothing below can fail, so a refused store changes nothing.
        self._weights.mul_(self._decay)
        # fill_ takes a Python scalar as a kernel argument; item assignment would copy it from
        # pageable host memory, which synchronises a CUDA stream (caught by the zero-sync test).
        self._weights[self._next].fill_(weight)
        self._data[self._next].copy_(data.detach())
        self._next = (self._next + 1) % self._capacity
        self._count = min(self._count + 1, self._capacity)

    def recall(self) -> torch.Tensor | None:
        """Decay-weighted mean of what is remembered (shape of ``data``), or None when empty.

        Computed in float32 or wider and returned in the stored dtype. All-zero weights give zeros.
        """
        if self._count == 0 or self._data is None or self._weights is None:
            return None
        weights = self._weights  # float32 or wider: the accumulation precision
        total = torch.tensordot(weights, self._data.to(weights.dtype), dims=1)
        norm = weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)
        return (total / norm).to(self._data.dtype)

    def clear(self) -> None:
        """Forget everything, including the stored shape."""
        self._data = None
        self._weights = None
        self._next = 0
        self._count = 0
