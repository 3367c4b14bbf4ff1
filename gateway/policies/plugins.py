"""Operators' plugins: loaded from the config, and run as steps of the routes that list them.

:func:`load_plugin` turns a ``plugins:`` entry's ``class`` (``path/to/file.py:Class``
or ``package.module:Class``) and ``config`` into a built :class:`gateway.plugin.Plugin`,
or raises :class:`PluginLoadError` naming the field at fault and why (the loader adds
the entry's location). A file is executed afresh on every load, so a reload picks up
an edited plugin; a module is imported once, as Python does.

:class:`PluginStep` runs one plugin on one route: it times both calls into
``gateway_plugin_duration_seconds{plugin}`` and turns anything the plugin raises
(or returns other than a Reply or None) into a logged 500 ``internal_error``.
"""

from __future__ import annotations

import dis
import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

from ..errors import InternalError
from ..plugin import Plugin
from . import Reply, Request, Response, Step

__all__ = ["PluginLoadError", "PluginStep", "load_plugin"]

log = logging.getLogger("gateway")


class PluginLoadError(Exception):
    """A plugin that cannot be built: ``field`` (``class`` or ``config``) and the reason."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def load_plugin(spec: str, config: Mapping[str, Any], base_dir: str) -> Plugin:
    """Import the class ``spec`` names and build it with ``config`` (a copy).

    A path (holding ``/`` or ending in ``.py``) is resolved as the config's other files
    are: as given when it exists from here, else relative to ``base_dir``.
    Raises PluginLoadError.
    """
    target, colon, class_name = spec.rpartition(":")
    if not colon or not target or not class_name.isidentifier():
        raise PluginLoadError("class", f"expected 'path/to/file.py:Class' or 'package.module:Class', got '{spec}'")
    module = _import(target, base_dir)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PluginLoadError("class", f"'{target}' has no class '{class_name}'")
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginLoadError("class", f"'{spec}' is not a gateway.plugin.Plugin subclass")
    try:
        plugin = cls(dict(config))
    except Exception as exc:
        raise PluginLoadError("config", f"{class_name} refused its config: {type(exc).__name__}: {exc}") from None
    return plugin


def _import(target: str, base_dir: str) -> ModuleType:
    if "/" in target or target.endswith(".py"):
        path = target if os.path.isabs(target) or os.path.exists(target) else os.path.join(base_dir, target)
        if not os.path.isfile(path):
            raise PluginLoadError("class", f"no such file: {target}")
        path = os.path.abspath(path)
        # One module name per file: a reload replaces the module it loaded before.
        name = "gateway_plugin_" + hashlib.sha256(path.encode()).hexdigest()[:16]
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise PluginLoadError("class", f"cannot import '{target}': not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # what dataclasses and pickle look a class's module up by
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise PluginLoadError("class", f"cannot import '{target}': {type(exc).__name__}: {exc}") from None
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise PluginLoadError("class", f"cannot import '{target}': {exc}") from None
    except Exception as exc:
        raise PluginLoadError("class", f"cannot import '{target}': {type(exc).__name__}: {exc}") from None


class PluginStep(Step):
    """One plugin in one route's steps. ``observe(name, seconds)`` records its time."""

    is_plugin = True

    def __init__(self, name: str, plugin: Step, observe: Callable[[str, float], None] | None) -> None:
        self.name = name
        self.plugin = plugin
        self._observe = observe
        self._asks = type(plugin).on_request is not Plugin.on_request
        self._answers = type(plugin).on_response is not Plugin.on_response
        self._runs_inline = not _may_wait(type(plugin).on_response)

    async def on_request(self, request: Request) -> Reply | None:
        """The plugin's answer; raises InternalError (logged) when it raised or answered nonsense."""
        if not self._asks:
            return None
        started = time.perf_counter()
        try:
            answer = self.plugin.on_request(request)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            self._failed(request, "on_request")
        finally:
            self._timed(started)
        if answer is not None and not isinstance(answer, Reply):
            log.error("request_id=%s plugin %s: on_request returned %s, not a Reply or None",
                      request.ctx.request_id, self.name, type(answer).__name__)
            raise InternalError()
        return answer  # type: ignore[no-any-return]

    def on_response(self, request: Request, response: Response) -> Awaitable[None] | None:
        """None once the plugin is done; when it may wait, an awaitable of its end, not yet begun
        (whoever awaits it runs it in a task, so ``asyncio.timeout`` and ``current_task()`` work).
        Raises InternalError (logged) when the plugin raised; the awaitable raises it when the
        plugin raised there.

        An ``async def`` with no ``await`` in it (SPEC §7's example) is run to its end here, without
        a task or a turn of the event loop.
        """
        if not self._answers:
            return None
        started = time.perf_counter()
        try:
            result = self.plugin.on_response(request, response)
            if inspect.iscoroutine(result) and self._runs_inline:
                try:
                    result.send(None)
                except StopIteration:
                    pass
                else:  # cannot happen: its code has no point where it could wait (_may_wait)
                    result.close()
                    raise RuntimeError("on_response waited, though its code has no await")
            elif inspect.isawaitable(result):
                return self._awaited(result, request, started)
        except Exception:
            self._timed(started)
            self._failed(request, "on_response")
        self._timed(started)
        return None

    async def _awaited(self, waiting: Awaitable[Any], request: Request, started: float) -> None:
        """The rest of an ``on_response`` that may wait; timed to its end."""
        try:
            await waiting
        except Exception:
            self._failed(request, "on_response")
        finally:
            self._timed(started)

    def _timed(self, started: float) -> None:
        if self._observe is not None:
            self._observe(self.name, time.perf_counter() - started)

    def _failed(self, request: Request, where: str) -> None:
        log.error("request_id=%s plugin %s raised in %s", request.ctx.request_id, self.name, where, exc_info=True)
        raise InternalError() from None


def _may_wait(function: Any) -> bool:
    """Whether a call of ``function`` may wait: an ``async def`` with a point where it could (an
    ``await``, ``async for`` or ``async with``: a yield in its bytecode), or anything that is not a
    plain function. Found once per plugin, at load."""
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is None:
        return True
    return any(op.opname in ("YIELD_VALUE", "YIELD_FROM") for op in dis.get_instructions(code))
