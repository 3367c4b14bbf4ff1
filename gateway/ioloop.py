"""The Tornado IOLoop the gateway serves on: asyncio's, with read interest that is parked, not dropped.

Tornado's ``IOStream`` withdraws read interest whenever it holds unread bytes and
nobody is reading, and asks for it again a moment later. On a keep-alive
connection that happens once per request: the next request often arrives while
the last answer is being finished, the stream buffers it and withdraws, and the
next ``read_until_regex`` asks again. On asyncio that is ``remove_reader`` then
``add_reader``; under uvloop the pair closes and re-creates a poll handle, eight
system calls per request (seen with strace), and both legs cost Python calls.

:class:`ParkedReaders` keeps a withdrawn reader registered and marks it parked;
asking again only unmarks it. If the socket turns readable while parked, the
reader is removed for real then, so level-triggered polling cannot spin on
bytes nobody wants; the next request for read interest registers it again and
the poller reports those bytes at once. Measured in README, Performance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tornado.ioloop import IOLoop
from tornado.platform.asyncio import AsyncIOMainLoop, BaseAsyncIOLoop

__all__ = ["ParkedReaders", "GatewayIOLoop", "install"]


class ParkedReaders(BaseAsyncIOLoop):
    """Mixin for Tornado's asyncio IOLoops: withdrawing read interest parks the reader."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        self.parked: set[int] = set()  # fds still registered for reads that nobody wants now
        super().initialize(*args, **kwargs)

    def add_handler(self, fd: Any, handler: Callable[..., None], events: int) -> None:
        fd, fileobj = self.split_fd(fd)
        if fd in self.handlers:
            raise ValueError(f"fd {fd} added twice")
        self.handlers[fd] = (fileobj, handler)
        self.update_handler(fd, events)

    def update_handler(self, fd: Any, events: int) -> None:
        fd, _ = self.split_fd(fd)
        if events & IOLoop.READ:
            if fd in self.parked:
                self.parked.discard(fd)  # still registered: nothing to ask the poller
            elif fd not in self.readers:
                self.selector_loop.add_reader(fd, self._readable, fd)
                self.readers.add(fd)
        elif fd in self.readers:
            self.parked.add(fd)
        if events & IOLoop.WRITE:
            if fd not in self.writers:
                self.selector_loop.add_writer(fd, self._handle_events, fd, IOLoop.WRITE)
                self.writers.add(fd)
        elif fd in self.writers:
            self.selector_loop.remove_writer(fd)
            self.writers.remove(fd)

    def remove_handler(self, fd: Any) -> None:
        self.parked.discard(self.split_fd(fd)[0])
        super().remove_handler(fd)

    def _readable(self, fd: int) -> None:
        if fd in self.parked:  # bytes nobody asked for: stop polling them until someone does
            self.parked.discard(fd)
            self.readers.discard(fd)
            self.selector_loop.remove_reader(fd)
            return
        fileobj, handler = self.handlers[fd]
        handler(fileobj, IOLoop.READ)


class GatewayIOLoop(ParkedReaders, AsyncIOMainLoop):
    """The IOLoop over the running asyncio loop (uvloop's where installed), with parked readers."""


def install() -> IOLoop:
    """Make :class:`GatewayIOLoop` Tornado's IOLoop for the running asyncio loop.

    Call it first thing in the loop's main coroutine: before anything asks for
    ``IOLoop.current()``, which would otherwise create a plain ``AsyncIOMainLoop``.
    """
    return GatewayIOLoop()
