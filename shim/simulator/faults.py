"""Injected faults: what the next matching requests get instead of the normal answer.

Only the selection is here (pure); server.py carries the faults out on the socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fault:
    """Matches requests by method (None = any), path suffix and a part of the path (None = any), for
    `times` requests.

    Applied in this order: sleep `delay`; then `reset` aborts the TCP connection, `hang` never answers
    (until the client goes away), `truncate` sends a Content-Length larger than the body and closes;
    otherwise `status` (with `body`: bytes sent raw, dict/list sent as JSON) replaces the answer, and
    with `status=None` the normal answer follows the delay. `times=None` matches forever.
    """

    method: str | None = None
    path_suffix: str | None = None
    path_contains: str | None = None  # e.g. "/jobs/": any job read, whatever its id
    status: int | None = None
    body: bytes | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False
    hang: bool = False
    truncate: bool = False
    times: int | None = 1

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        return self.path_suffix is None or path.endswith(self.path_suffix)


@dataclass
class _Armed:
    fault: Fault
    remaining: int | None  # None: forever


class FaultQueue:
    """Pending faults in injection order; the caller's Fault objects are never mutated."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def add(self, fault: Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError("Fault.times must be >= 1 (or None for every request)")
        self._armed.append(_Armed(fault, fault.times))

    def take(self, method: str, path: str) -> Fault | None:
        """The first pending fault matching the request, counting one use of it."""
        for armed in self._armed:
            if not armed.fault.matches(method, path):
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._armed.remove(armed)
            return armed.fault
        return None

    @property
    def pending(self) -> list[Fault]:
        return [armed.fault for armed in self._armed]

    def clear(self) -> None:
        self._armed.clear()
