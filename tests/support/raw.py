"""Raw TCP on loopback, for tests where the bytes on the wire are the point.

:class:`RawUpstream` is an HTTP/1.1 upstream that records what reaches it and
answers with exact bytes. Two ways to talk to the gateway in exact bytes:

* :func:`exchange` sends the request and returns everything until the gateway
  closes (a request with ``Connection: close``, or one the gateway refuses and
  closes on);
* :func:`first_answer` sends the head, then body parts only while no answer has
  come, and returns the first answer as soon as it is whole, connection open or
  not (an answer before the body, e.g. 413 from Content-Length alone).

:func:`parse` splits one answer; :class:`AccessLines` captures an in-process
gateway's access log.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer
from tornado.testing import bind_unused_port

from gateway.accesslog import AccessLog

__all__ = ["OK_ANSWER", "RawUpstream", "exchange", "first_answer", "parse", "body_of", "AccessLines"]


OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RawUpstream(TCPServer):
    """Answers every request with ``answer`` and closes the connection after it when ``close``;
    waits ``read_delay`` seconds after each head before it reads the body (backpressure).

    ``heads``: each request head, as soon as it arrived; ``requests``: each whole request
    (head plus a Content-Length or chunked body); ``open``: connections open now.
    """

    def __init__(self, answer: bytes, close: bool = False, read_delay: float = 0.0) -> None:
        super().__init__()
        self.answer = answer
        self.close = close
        self.read_delay = read_delay
        self.connections = 0
        self.open = 0
        self.heads: list[bytes] = []
        self.requests: list[bytes] = []
        sock, self.port = bind_unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.add_sockets([sock])

    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        self.connections += 1
        self.open += 1
        try:
            while True:
                head = await stream.read_until(b"\r\n\r\n")
                self.heads.append(head)
                if self.read_delay:
                    await asyncio.sleep(self.read_delay)
                lowered = head.lower()
                body = b""
                if b"content-length:" in lowered:
                    length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await stream.read_bytes(length)
                elif b"transfer-encoding: chunked" in lowered:
                    body = await stream.read_until(b"\r\n0\r\n\r\n")
                self.requests.append(head + body)
                await stream.write(self.answer)
                if self.close:
                    break
        except StreamClosedError:
            pass
        finally:
            self.open -= 1
            stream.close()


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` to 127.0.0.1:``port``; everything that comes back until the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def first_answer(port: int, head: bytes, parts: tuple[bytes, ...] = (), wait: float = 0.1,
                       timeout: float = 5.0) -> bytes:
    """Send ``head`` (the request head with its blank line, or a whole request) to 127.0.0.1:``port``,
    then each of ``parts`` after waiting up to ``wait`` seconds for an answer, stopping once one came;
    return that first answer: its head and the Content-Length body, or everything until the gateway
    closes when it has no Content-Length. Raises TimeoutError if it is not whole within ``timeout``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def read_answer() -> bytes:
        answer_head = await reader.readuntil(b"\r\n\r\n")
        _, headers, _ = parse(answer_head)
        if "content-length" in headers:
            return answer_head + await reader.readexactly(int(headers["content-length"]))
        return answer_head + await reader.read()

    try:
        writer.write(head)
        answer = asyncio.ensure_future(read_answer())
        for part in parts:
            await asyncio.wait({answer}, timeout=wait)
            if answer.done():
                break
            writer.write(part)
        return await asyncio.wait_for(answer, timeout)
    finally:
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names; a repeated one keeps its last value) and what follows the head."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, rest


def body_of(request: bytes) -> bytes:
    """The body of one request :class:`RawUpstream` recorded, de-chunked if it was chunked."""
    head, _, body = request.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return body
    data = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return data
        data, body = data + body[:size], body[size + 2:]


class AccessLines:
    """An in-process gateway's access log, written to memory instead of stdout."""

    def __init__(self, gateway: Any) -> None:
        self._out = io.StringIO()
        self._holder = gateway.holder
        self._holder.access_log = AccessLog(self._out)

    def entries(self) -> list[dict[str, Any]]:
        self._holder.access_log.flush()
        return [json.loads(line) for line in self._out.getvalue().splitlines()]

    def by_id(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for entry in self.entries():
            found.setdefault(entry["request_id"], []).append(entry)
        return found
