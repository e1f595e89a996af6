"""Contract checks that implementations of the protocols reuse in their own tests.

They raise ``AssertionError`` with a message that names the failing part, so a test can simply call
them. Torch tensors are recognised by duck typing, keeping this module free of run-time torch.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = [
    "FifoFeeder",
    "assert_conforms",
    "assert_plain_payload",
    "assert_roundtrip",
    "payloads_equal",
]

_PLAIN = (str, int, float, bool, type(None))


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "shape")


def assert_conforms(obj: Any, protocol: type) -> None:
    """Assert ``obj`` implements every member of a runtime-checkable ``protocol``."""
    if not isinstance(obj, protocol):
        members = sorted(getattr(protocol, "__protocol_attrs__", ()))
        missing = [m for m in members if not hasattr(obj, m)]
        raise AssertionError(
            f"{type(obj).__name__} does not implement {protocol.__name__}; missing {missing}"
        )


def assert_plain_payload(payload: Any, path: str = "payload") -> None:
    """Assert a ``to_dict()`` payload holds only tensors and plain data, no object references."""
    if _is_tensor(payload) or isinstance(payload, _PLAIN):
        return
    if isinstance(payload, dict):
        for key, value in payload.items():
            if not isinstance(key, str):
                raise AssertionError(f"{path} has non-string key {key!r}")
            assert_plain_payload(value, f"{path}[{key!r}]")
        return
    if isinstance(payload, list | tuple):
        for i, value in enumerate(payload):
            assert_plain_payload(value, f"{path}[{i}]")
        return
    raise AssertionError(f"{path} is a {type(payload).__name__}, not a tensor or plain data")


def payloads_equal(a: Any, b: Any) -> bool:
    """Exact structural equality of two payloads (tensors: same dtype, shape and values)."""
    if _is_tensor(a) or _is_tensor(b):
        return (
            _is_tensor(a)
            and _is_tensor(b)
            and a.dtype == b.dtype
            and tuple(a.shape) == tuple(b.shape)
            and bool(a.detach().cpu().equal(b.detach().cpu()))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(payloads_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(payloads_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN round-trips as NaN
    return type(a) is type(b) and a == b


def assert_roundtrip(component: Any) -> Any:
    """Assert ``type(c).from_dict(c.to_dict())`` rebuilds ``c`` exactly; returns the rebuilt one."""
    payload = component.to_dict()
    assert_plain_payload(payload)
    rebuilt = type(component).from_dict(payload)
    again = rebuilt.to_dict()
    if not payloads_equal(payload, again):
        raise AssertionError(f"{type(component).__name__} does not round-trip through to_dict")
    return rebuilt


class FifoFeeder:
    """A FIFO at ``path`` (made here) that hands ``data`` to any reader that opens it, counting
    the readers in ``opened``: a test of code that must never read a FIFO (a read blocks until a
    writer comes) fails on a count or on junk instead of hanging. A context manager; ``close()``
    stops the feeding thread."""

    def __init__(self, path: str | os.PathLike[str], data: bytes = b"junk") -> None:
        os.mkfifo(path)
        self.path, self.data, self.opened = path, data, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        while not self._stop.wait(0.01):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader has it open
                continue
            self.opened += 1
            os.write(fd, self.data)
            os.close(fd)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> FifoFeeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
