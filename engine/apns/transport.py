"""Byte streams to APNs: TCP, then TLS 1.2+ with ALPN `h2` (apns.md §1), or plaintext h2c.

A `Connector` is any zero-argument coroutine function that returns a connected `trio.abc.Stream`.
The connection layer only ever sees that seam, so tests hand it an in-memory stream to the
simulator and production hands it `tcp_connector(endpoint, ...)`. Every failure to connect comes
out as one `ConnectError` whose message names the endpoint and the cause, and nothing secret (the
transport never sees a provider token).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import trio

from engine.config import ApnsEndpoint

__all__ = ["ConnectError", "Connector", "client_ssl_context", "tcp_connector"]

Connector: TypeAlias = Callable[[], Awaitable[trio.abc.Stream]]
"""Opens one fresh byte stream to APNs (or to a stand-in) per call."""

_ALPN_H2 = "h2"


class ConnectError(Exception):
    """A connection to APNs could not be opened; the message says where and why."""


def client_ssl_context(endpoint: ApnsEndpoint) -> ssl.SSLContext:
    """TLS 1.2 or later, ALPN `h2` only, trusting `endpoint.ca_file` instead of the system store.

    APNs requires HTTP/2 over TLS 1.2+ (apns.md §1); offering only `h2` means a server that cannot
    speak HTTP/2 fails the handshake or selects nothing, and either way the caller is told.
    """
    cafile = str(endpoint.ca_file) if endpoint.ca_file is not None else None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([_ALPN_H2])
    return ctx


def tcp_connector(
    endpoint: ApnsEndpoint,
    *,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> Connector:
    """A `Connector` for `endpoint`: TCP with TCP_NODELAY, then TLS unless `endpoint.tls` is False.

    Each call resolves the host again (trio.open_tcp_stream does a fresh lookup), as Apple asks of
    clients that open several connections (apns.md §4). The whole connect, TLS handshake included,
    is bounded by `connect_timeout` seconds. `ssl_context` overrides the context built from the
    endpoint (it must offer ALPN `h2`).
    """
    if connect_timeout <= 0:
        raise ValueError("connect_timeout must be > 0")
    context = None
    if endpoint.tls:
        context = ssl_context if ssl_context is not None else client_ssl_context(endpoint)
    where = f"{endpoint.host}:{endpoint.port}"
    server_hostname = endpoint.server_hostname or endpoint.host

    async def connect() -> trio.abc.Stream:
        try:
            with trio.fail_after(connect_timeout):
                return await _open(endpoint, context, server_hostname, where)
        except trio.TooSlowError:
            raise ConnectError(
                f"connecting to APNs at {where} timed out after {connect_timeout:g} s"
            ) from None

    return connect


async def _open(
    endpoint: ApnsEndpoint,
    context: ssl.SSLContext | None,
    server_hostname: str,
    where: str,
) -> trio.abc.Stream:
    try:
        tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    except OSError as exc:
        raise ConnectError(f"cannot reach APNs at {where}: {_describe(exc)}") from exc
    try:
        # Requests are small and batched by the writer; Nagle would only add latency.
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        if context is None:
            return tcp  # h2c: HTTP/2 with prior knowledge, for local simulators only
        tls = trio.SSLStream(tcp, context, server_hostname=server_hostname, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise ConnectError(
                f"TLS handshake with APNs at {where} failed: {_describe(cause)}"
            ) from exc
        selected = tls.selected_alpn_protocol()
        if selected != _ALPN_H2:
            raise ConnectError(
                f"APNs at {where} did not select HTTP/2 over TLS (ALPN h2); "
                f"it selected {selected or 'nothing'}"
            )
        return tls
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a socket or TLS error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    causes = getattr(exc.__cause__, "exceptions", ())  # trio's happy eyeballs: one per address
    if causes:
        return "; ".join(sorted({_describe(c) for c in causes}))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
