"""Parked readers (gateway.ioloop) on real sockets, on asyncio's loop and on uvloop's.

Tornado's IOStreams drive the rest of the suite over this IOLoop kind (tests/conftest.py's
``io_loop``) and the served gateway (``run.py``); these tests pin the parking rules themselves,
and the private parts of Tornado's ``BaseAsyncIOLoop`` that :class:`~gateway.ioloop.ParkedReaders`
reads and replaces (``handlers``, ``readers``, ``writers``, ``selector_loop``, ``_handle_events``),
so that a Tornado release that changes them fails here, by name, before anything else.
"""

from __future__ import annotations

import asyncio
import configparser
import inspect
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado
from packaging.requirements import Requirement
from packaging.version import Version
from tornado.ioloop import IOLoop
from tornado.platform.asyncio import BaseAsyncIOLoop

from gateway.ioloop import ParkedReaders

SETUP_CFG = Path(__file__).parents[2] / "setup.cfg"

uvloop = pytest.importorskip("uvloop")


class ParkedOn(ParkedReaders, BaseAsyncIOLoop):
    """ParkedReaders over a given asyncio loop."""


class PlainOn(BaseAsyncIOLoop):
    """Tornado's own behaviour over a given asyncio loop, which ParkedReaders mirrors."""


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


# --- the Tornado internals gateway.ioloop relies on -------------------------------------------


def test_installed_tornado_is_in_the_range_setup_cfg_pins() -> None:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    pins = [Requirement(line) for line in parser["options"]["install_requires"].splitlines()
            if line.strip().startswith("tornado")]
    assert len(pins) == 1 and pins[0].specifier, "setup.cfg must pin tornado with an upper bound"
    assert any(spec.operator == "<" for spec in pins[0].specifier), f"no upper bound in {pins[0]}"
    assert Version(tornado.version) in pins[0].specifier, (
        f"Tornado {tornado.version} is outside {pins[0]}, the range gateway.ioloop's use of "
        "BaseAsyncIOLoop internals was verified on: run tests/unit/test_ioloop.py and widen the pin")


def test_base_asyncio_loop_keeps_the_state_parked_readers_use(pair) -> None:
    plain = PlainOn(asyncio.new_event_loop(), make_current=False)
    try:
        assert isinstance(plain.handlers, dict), "BaseAsyncIOLoop.handlers: fd -> (fileobj, handler)"
        assert isinstance(plain.readers, set), "BaseAsyncIOLoop.readers: fds registered for reads"
        assert isinstance(plain.writers, set), "BaseAsyncIOLoop.writers: fds registered for writes"
        assert plain.selector_loop is plain.asyncio_loop, "BaseAsyncIOLoop.selector_loop: where readers go"
        assert list(inspect.signature(plain._handle_events).parameters) == ["fd", "events"], (
            "BaseAsyncIOLoop._handle_events(fd, events): what ParkedReaders registers writers with")
        ours, _ = pair
        handler = lambda fd, ev: None  # noqa: E731
        plain.add_handler(ours, handler, IOLoop.READ)
        assert plain.handlers[ours.fileno()] == (ours, handler) and ours.fileno() in plain.readers
        plain.update_handler(ours, IOLoop.WRITE)
        assert ours.fileno() not in plain.readers and ours.fileno() in plain.writers
        plain.update_handler(ours, IOLoop.READ)
        plain.remove_handler(ours)  # what ParkedReaders.remove_handler leaves to it
        assert (plain.handlers, plain.readers, plain.writers) == ({}, set(), set())
    finally:
        plain.close(all_fds=False)
        pair[0].close()


def test_parked_readers_overrides_exactly_the_methods_it_means_to() -> None:
    """A Tornado release that adds its own override of one of these would bypass parking."""
    replaced = {"initialize", "add_handler", "update_handler", "remove_handler", "_readable"}
    assert {name for name in vars(ParkedReaders) if callable(vars(ParkedReaders)[name])} == replaced
    for name in replaced - {"_readable"}:
        assert getattr(BaseAsyncIOLoop, name).__qualname__ == f"BaseAsyncIOLoop.{name}", name
    assert not hasattr(BaseAsyncIOLoop, "_readable") and not hasattr(BaseAsyncIOLoop, "parked")
