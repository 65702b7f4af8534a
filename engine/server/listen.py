"""The public port of `lockstep serve --workers N`: listening sockets made once, by the parent.

The supervisor (engine/server/workers.py) binds before it starts any worker and hands each worker
its socket as an inherited descriptor. Why the parent binds, rather than each worker binding
host:port itself with SO_REUSEPORT:

* `--port 0` (tests, and any "pick a free port" setup) names one port for all workers: the first
  bind picks it and the others join it. Workers binding on their own would each get another one.
* A port in use, or an address that is not this machine's, is one clear start-up error from the
  parent (engine/server/startup.py), before any worker runs.
* A worker that dies does not take its accept queue with it: the parent keeps its copy of the
  socket, so connections the kernel queued there wait for the restarted worker instead of being
  reset, and the restarted worker serves the very same socket.

On Linux every worker gets a socket of its own in one SO_REUSEPORT group: the kernel spreads new
connections across the group by a hash of their addresses, evenly, each worker accepting from its
own queue (no thundering herd of N processes woken for one connection). Where SO_REUSEPORT does
not balance TCP connections (macOS and the BSDs hand them all to one socket), the workers share
one socket and whichever is idle accepts; the behaviour is the same, the spread less even.

One address only: the first that `host` resolves to (an IPv4 or IPv6 literal, or a name such as
`localhost`); a single-process server listens the same way.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Final

__all__ = ["BACKLOG", "balanced", "listening_sockets"]

BACKLOG: Final = 1024
"""Connections the kernel queues per socket before the worker accepts them (as trio's default)."""


def balanced() -> bool:
    """Whether the kernel balances connections across a SO_REUSEPORT group (Linux)."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets for `count` workers, all on one host:port (see the module
    docstring): a SO_REUSEPORT group on Linux, else one socket shared by all. OSError (errno
    EADDRINUSE for a port in use) when the address cannot be bound; nothing stays open then."""
    if count < 1:
        raise ValueError("count must be at least 1")
    family, address = _address(host, port)
    made: list[socket.socket] = []
    try:
        if not balanced():
            made.append(_bind(family, address, reuse_port=False))
            return made * count
        for _ in range(count):
            sock = _bind(family, address, reuse_port=True)
            made.append(sock)
            address = sock.getsockname()  # port 0 resolved: the others join the first
        return made
    except BaseException:
        for sock in made:
            sock.close()
        raise


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The first TCP address `host` resolves to, for binding (AI_PASSIVE)."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = found[0]
    return family, tuple(address)


def _bind(
    family: socket.AddressFamily, address: tuple[Any, ...], *, reuse_port: bool
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As trio's own listeners: a restarted server rebinds while old connections linger.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as trio's
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.set_inheritable(True)  # handed to a worker process (pass_fds)
    except BaseException:
        sock.close()
        raise
    return sock
