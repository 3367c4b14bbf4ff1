"""Parked readers (gateway.ioloop) on real sockets, on asyncio's loop and on uvloop's.

Tornado's IOStreams drive the rest of the suite over this IOLoop kind (tests/conftest.py's
``io_loop``) and the served gateway (``run.py``); these tests pin the parking rules themselves.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop
from tornado.platform.asyncio import BaseAsyncIOLoop

from gateway.ioloop import ParkedReaders

uvloop = pytest.importorskip("uvloop")


class ParkedOn(ParkedReaders, BaseAsyncIOLoop):
    """ParkedReaders over a given asyncio loop."""


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: Any) -> Iterator[ParkedOn]:
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop)
    parked = ParkedOn(factory(), make_current=False)
    yield parked
    parked.close(all_fds=True)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    theirs.close()


def run_briefly(loop: ParkedOn, seconds: float = 0.05) -> None:
    loop.run_sync(lambda: asyncio.sleep(seconds))


def reading_into(events: list[tuple[int, bytes]], sock: socket.socket) -> Callable[[Any, int], None]:
    """A handler that reads what it is told of, as an IOStream would."""
    return lambda fd, ev: events.append((ev, sock.recv(100)))


def test_withdrawn_read_interest_is_parked_and_asking_again_unparks(loop, pair) -> None:
    ours, theirs = pair
    events: list[tuple[int, bytes]] = []
    loop.add_handler(ours, reading_into(events, ours), IOLoop.READ)
    loop.update_handler(ours, IOLoop.ERROR)
    assert ours.fileno() in loop.parked and ours.fileno() in loop.readers  # still registered
    loop.update_handler(ours, IOLoop.READ | IOLoop.ERROR)
    assert ours.fileno() not in loop.parked
    theirs.send(b"x")
    run_briefly(loop)
    assert events == [(IOLoop.READ, b"x")]


def test_bytes_arriving_while_parked_unregister_once_then_wait_for_interest(loop, pair) -> None:
    ours, theirs = pair
    events: list[tuple[int, bytes]] = []
    loop.add_handler(ours, reading_into(events, ours), IOLoop.READ)
    loop.update_handler(ours, IOLoop.ERROR)
    theirs.send(b"unwanted for now")
    run_briefly(loop)  # level-triggered: unregistered on the first report, so no spinning
    assert events == [] and ours.fileno() not in loop.readers and ours.fileno() not in loop.parked
    loop.update_handler(ours, IOLoop.READ)  # registered again: the waiting bytes are reported at once
    run_briefly(loop)
    assert events == [(IOLoop.READ, b"unwanted for now")]


def test_a_parked_reader_is_removed_with_its_handler(loop, pair) -> None:
    ours, theirs = pair
    loop.add_handler(ours, lambda fd, ev: None, IOLoop.READ)
    loop.update_handler(ours, IOLoop.ERROR)
    loop.remove_handler(ours)
    assert ours.fileno() not in loop.parked and ours.fileno() not in loop.readers
    events: list[tuple[int, bytes]] = []
    loop.add_handler(ours, reading_into(events, ours), IOLoop.READ)  # not "added twice"
    theirs.send(b"x")
    run_briefly(loop)
    assert events == [(IOLoop.READ, b"x")]


def test_write_interest_is_added_and_removed_as_asked(loop, pair) -> None:
    ours, _ = pair
    events: list[int] = []
    loop.add_handler(ours, lambda fd, ev: events.append(ev), IOLoop.WRITE)
    run_briefly(loop)
    assert IOLoop.WRITE in events
    loop.update_handler(ours, IOLoop.ERROR)
    events.clear()
    run_briefly(loop)
    assert events == [] and ours.fileno() not in loop.writers
