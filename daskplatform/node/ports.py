"""Ports for spawned processes, from the role's fixed range (DESIGN.md, Ports).

Several agents may share one host locally, so a port is handed out only if it binds
right now and is not already promised to another live process of this agent.
"""

from __future__ import annotations

import socket


class PortsExhausted(RuntimeError):
    """No free port left in the configured range."""


class PortAllocator:
    """Hands out bind-tested ports from ``[low, high]``; remembers what it promised."""

    def __init__(self, port_range: tuple[int, int], host: str) -> None:
        self._low, self._high = port_range
        self._host = host
        self._taken: set[int] = set()
        self._next = self._low

    def reserve(self, ports: list[int]) -> None:
        """Mark ports of re-adopted processes as taken."""
        self._taken.update(ports)

    def release(self, ports: list[int]) -> None:
        self._taken.difference_update(ports)

    def allocate(self, count: int) -> list[int]:
        """``count`` distinct free ports; rotates through the range so a just-freed
        port (maybe in TIME_WAIT for a peer) is reused last."""
        chosen: list[int] = []
        size = self._high - self._low + 1
        for _ in range(size):
            if len(chosen) == count:
                break
            port = self._next
            self._next = self._low if port >= self._high else port + 1
            if port in self._taken or not _bindable(self._host, port):
                continue
            chosen.append(port)
        if len(chosen) < count:
            raise PortsExhausted(
                f"only {len(chosen)} of {count} ports free in range {self._low}-{self._high}"
            )
        self._taken.update(chosen)
        return chosen


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
