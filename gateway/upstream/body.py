"""Request bodies on their way upstream: a :class:`BodyStream` fed chunk by chunk, with backpressure.

A streamed body is handed from whoever produces it (the client connection, or an
``AsyncHTTPClient`` caller's ``body_producer``) to the upstream connection one chunk
at a time: :meth:`BodyStream.put` returns once its chunk is queued, that is once the
consumer has taken the previous one, and the consumer takes the next only after the
connection's write buffer drained below its high-water mark. So a fast producer
cannot fill memory: it is read as fast as the upstream accepts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tornado.iostream import StreamClosedError

__all__ = ["BodyStream", "from_producer"]


class BodyStream:
    """A request body handed to the upstream connection chunk by chunk.

    At most one chunk waits here while another is being written.
    ``length``: the declared length, or None to send the body chunked.
    """

    def __init__(self, length: int | None = None) -> None:
        self.length = length
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._aborted = False
        self._producer_waiting = False

    async def put(self, chunk: bytes) -> None:
        if not self._aborted:
            self._producer_waiting = self._queue.full()
            try:
                await self._queue.put(chunk)
            finally:
                self._producer_waiting = False

    def close(self) -> None:
        """The body is complete."""
        if self._aborted:
            return
        if self._queue.full():  # the last chunk is not taken yet: the end marker queues behind it
            asyncio.ensure_future(self._queue.put(None))
        else:
            self._queue.put_nowait(None)

    def abort(self) -> None:
        """Either side gave up: release a waiting producer, drop what is queued, wake a waiting consumer."""
        if self._aborted:
            return
        # A full queue does not mean that no consumer waits: get() may have been woken by the
        # queued chunk and not run yet; draining steals that chunk, so it must be woken again.
        producer_waiting = self._producer_waiting
        self._aborted = True
        while not self._queue.empty():
            self._queue.get_nowait()
        if not producer_waiting:
            self._queue.put_nowait(None)  # wakes get(), which then raises
        # else the drain released the producer, whose chunk wakes get() in turn

    @property
    def waiting(self) -> bool:
        """A chunk waits for the consumer to take the one before: the upstream side is the slow one."""
        return self._producer_waiting

    @property
    def aborted(self) -> bool:
        """The producer gave the body up: it must not be sent on, nor finished as if complete."""
        return self._aborted

    async def get(self) -> bytes | None:
        """The next chunk, or None at the end of the body. Raises StreamClosedError once aborted,
        so a body cut short is never finished as if complete."""
        if not self._aborted:
            chunk = await self._queue.get()
            if not self._aborted:
                return chunk
        raise StreamClosedError()


def from_producer(producer: Callable[[Callable[[bytes], Awaitable[None]]], Any] | Callable[..., Any],
                  length: int | None) -> tuple[BodyStream, asyncio.Future[Any]]:
    """Run a Tornado ``body_producer`` into a new :class:`BodyStream`.

    The producer is called with a ``write(chunk)`` whose awaitable resolves once the chunk is
    queued (backpressure as above); when the producer's own awaitable resolves the stream is
    closed, and when it fails the stream is aborted (the upstream never sees the body as complete).
    Returns the stream and the producer's future (its failure is the caller's to report).
    """
    stream = BodyStream(length)

    async def run() -> None:
        try:
            result = producer(stream.put)
            if result is not None:
                await result
        except BaseException:
            stream.abort()
            raise
        stream.close()

    return stream, asyncio.ensure_future(run())
