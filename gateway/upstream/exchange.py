"""One request/response exchange on a pooled connection: take or open, write, read, give back.

:func:`exchange` is what every fetch of :class:`~gateway.upstream.client.PooledHTTPClient`
comes down to. The request goes on an idle connection of the (origin, TLS context) pool
or a new one; the body is ``bytes`` (written with the head) or a
:class:`~gateway.upstream.body.BodyStream` (written chunk by chunk, each after the
socket drained below its high-water mark; chunk-encoded when its length is unknown;
its writing stops early when the upstream answers first). A kept connection that turns
out dead before any byte of the answer is retried once on a fresh connection when the
request is safe to repeat. A connection goes back to its pool only after a complete,
keep-alive answer to a request that was sent whole. Errors: see the client's docstring.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tornado.iostream import StreamClosedError

from ..config import Origin
from ..errors import BadGateway, UpstreamTimeout
from ..tables import IDEMPOTENT_METHODS
from .body import BodyStream
from .connection import Connection, ConnectionPool
from .http1 import OnBody, OnFields, ResponseInterrupted, ResponseReader, request_head

if TYPE_CHECKING:
    from .request import GatewayRequest

__all__ = ["exchange"]

JOIN_BODY_BYTES = 64 * 1024  # a buffered body up to this size goes out in the same write as the head


async def exchange(
    pool: ConnectionPool, origin: Origin, ssl_context: ssl.SSLContext | None, method: str, target: str,
    fields: Sequence[tuple[str, str]], body: bytes | BodyStream | None, on_fields: OnFields, on_body: OnBody,
    connect_timeout: float, request_timeout: float, max_idle: int, owner: GatewayRequest | None,
) -> tuple[int, str]:
    """Send one request to ``origin`` and hand its answer to ``on_fields``/``on_body``; the status
    and reason. ``fields`` are sent as they are, after ``Host`` and before the body's framing.
    ``owner``, a GatewayRequest, can abort the exchange (:meth:`GatewayRequest.abort`) while it runs.
    """
    if isinstance(body, BodyStream):
        framing = "Transfer-Encoding: chunked" if body.length is None else f"Content-Length: {body.length}"
    elif body or method in ("POST", "PUT", "PATCH"):
        framing = f"Content-Length: {len(body or b'')}"
    else:
        framing = ""
    head = request_head(method, target, origin.netloc, fields, framing)
    conn = pool.take((origin, ssl_context))
    reused = conn is not None
    if conn is None:
        conn = await pool.connect(origin, connect_timeout, ssl_context)
    try:
        return await _once(pool, origin, conn, reused, method, head, body, on_fields, on_body,
                           request_timeout, max_idle, owner)
    except _StaleConnection:
        # A kept-alive connection died before answering. Only a request that is safe to
        # repeat (or was never written) goes again, once, on a fresh connection.
        conn = await pool.connect(origin, connect_timeout, ssl_context)
        return await _once(pool, origin, conn, False, method, head, body, on_fields, on_body,
                           request_timeout, max_idle, owner)


class _StaleConnection(Exception):
    pass


async def _once(
    pool: ConnectionPool, origin: Origin, conn: Connection, reused: bool, method: str, head: bytes,
    body: bytes | BodyStream | None, on_fields: OnFields, on_body: OnBody, request_timeout: float,
    max_idle: int, owner: GatewayRequest | None,
) -> tuple[int, str]:
    reader = ResponseReader(conn, on_fields, on_body, request_timeout, method == "HEAD")
    released = False
    try:
        if owner is not None:
            if owner.aborted:  # the client gave up while this connection was being found
                raise ResponseInterrupted("the client closed the connection", upstream_fault=False)
            owner._reader = reader
        if isinstance(body, BodyStream):
            if body.aborted:
                raise ResponseInterrupted("the client's request body broke off before it was sent",
                                          upstream_fault=False)
            conn.write(head)
            await _write_stream(conn, reader, body, origin)
        elif body and len(body) > JOIN_BODY_BYTES:
            conn.write(head)  # a large buffered body is not copied again just to join it to the head
            conn.write(body)
        else:
            conn.write(head + body if body else head)  # one write, one system call
        reader.touch()
        await reader.done
        if reader.sink_error is not None:
            raise reader.sink_error
        if reader.complete:  # the reader has let go of the connection (see ResponseReader._end)
            if reader.keep_alive and not reader.body_unsent:
                released = True
                pool.release(conn, max_idle)
            return reader.status, reader.reason
        if reader.started:
            why = "timed out" if reader.timed_out else "closed the connection"
            raise ResponseInterrupted(f"{origin} {why} while sending the response body")
        if reader.timed_out:
            raise UpstreamTimeout(log_message=f"{origin} did not answer within {request_timeout:g}s", sent=True)
        if reader.malformed:
            raise BadGateway("the upstream sent an invalid answer",
                             log_message=f"{origin} answered malformed HTTP: {reader.malformed}")
        if reused and not reader.received and not isinstance(body, BodyStream) and (
                method in IDEMPOTENT_METHODS):
            raise _StaleConnection()
        raise BadGateway("the upstream closed the connection before answering",
                         log_message=f"{origin} closed the connection before answering")
    finally:
        reader.stop()
        if owner is not None:
            owner._reader = None
        if isinstance(body, BodyStream):
            body.abort()
        if not released:
            conn.close()


async def _write_stream(conn: Connection, reader: ResponseReader, body: BodyStream, origin: Origin) -> None:
    """Write a streamed request body, chunk-encoded when its length is unknown; stop early
    if the upstream already answered (the rest of the body is then left unsent)."""
    declared = -1 if body.length is None else body.length
    chunked = declared < 0
    written = 0
    reader.waiting_on_client = True
    try:
        while not reader.done.done():
            try:
                chunk = await body.get()
            except StreamClosedError:
                reader.body_unsent = True
                conn.close()  # the client went away mid-body: the upstream must not see it as complete
                raise ResponseInterrupted("the client's request body broke off", upstream_fault=False) from None
            reader.waiting_on_client = False
            if reader.done.done():
                break
            if chunk is None:
                if chunked:
                    conn.write(b"0\r\n\r\n")
                elif written != declared:
                    raise BadGateway("the request body was shorter than its Content-Length",
                                     log_message=f"request to {origin} could not be written: "
                                                 f"{written} of {declared} declared body bytes")
                return
            if not chunk:
                continue
            written += len(chunk)
            if chunked:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            elif written > declared:
                raise BadGateway("the request body was longer than its Content-Length",
                                 log_message=f"request to {origin} could not be written: "
                                             f"more than {declared} declared body bytes")
            else:
                conn.write(chunk)
            reader.touch()
            await conn.drain()
            reader.waiting_on_client = True
        reader.body_unsent = True  # the answer came before the whole body went out
    finally:
        reader.waiting_on_client = False
