"""The plugins section (SPEC §7) in the loader: plugins built at load, every mistake a problem with its place."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.loader import parse_config
from gateway.plugin import Plugin

PLUGIN_FILE = """\
from gateway.plugin import Plugin, Reply

class Good(Plugin):
    def __init__(self, config):
        self.greeting = config.get("greeting", "hi")

class Picky(Plugin):
    def __init__(self, config):
        if config.get("mode") not in ("a", "b"):
            raise ValueError("mode must be a or b")

class NeedsKey(Plugin):
    def __init__(self, config):
        self.key = config["key"]

class Buggy(Plugin):
    def __init__(self, config):
        raise RuntimeError("boom")

class NotAPlugin:
    def __init__(self, config):
        pass

CONSTANT = 3
"""


def load(tmp_path: Path, plugins: str, routes: str = "") -> object:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / "mine.py").write_text(PLUGIN_FILE)
    (tmp_path / "plugins" / "broken.py").write_text("def oops(:\n")
    text = ('upstreams: {up: {targets: ["http://127.0.0.1:9"]}}\nplugins:\n'
            + textwrap.indent(textwrap.dedent(plugins), "  ")
            + f"\nroutes:\n  - {{name: r, path: /r, upstream: up{routes}}}\n")
    return parse_config(text, source=str(tmp_path / "gateway.yaml"))


def problems(tmp_path: Path, plugins: str, routes: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, plugins, routes)
    return caught.value.problems


def test_a_plugin_is_built_once_at_load_with_its_config(tmp_path: Path) -> None:
    config = load(tmp_path, """\
        - {name: hello, class: plugins/mine.py:Good, config: {greeting: hey}}
        - {name: picky, class: plugins/mine.py:Picky, config: {mode: a}}
        """, ", plugins: [picky, hello]")
    plugins = {p.name: p for p in config.plugins}  # type: ignore[attr-defined]
    assert isinstance(plugins["hello"].plugin, Plugin)
    assert plugins["hello"].plugin.greeting == "hey"
    assert plugins["hello"].class_path == "plugins/mine.py:Good"
    assert config.routes[0].plugins == ("picky", "hello")  # type: ignore[attr-defined]


def test_a_dotted_path_is_imported(tmp_path: Path) -> None:
    config = load(tmp_path, "- {name: tenant, class: 'tests.unit.test_plugin_config:Dotted'}")
    cls = type(config.plugins[0].plugin)  # type: ignore[attr-defined]
    assert (cls.__module__, cls.__name__) == ("tests.unit.test_plugin_config", "Dotted")


class Dotted(Plugin):
    pass


@pytest.mark.parametrize(("plugins", "routes", "expected"), [
    ("- {name: x, class: 'x.y:C'}", "",
     ["plugins[0].class: cannot import 'x.y': No module named 'x'"]),
    ("- {name: x, class: plugins/none.py:C}", "", ["plugins[0].class: no such file: plugins/none.py"]),
    ("- {name: x, class: plugins/broken.py:C}", "",
     ["plugins[0].class: cannot import 'plugins/broken.py': SyntaxError: invalid syntax (broken.py, line 1)"]),
    ("- {name: x, class: plugins/mine.py}", "",
     ["plugins[0].class: expected 'path/to/file.py:Class' or 'package.module:Class', got 'plugins/mine.py'"]),
    ("- {name: x, class: plugins/mine.py:Missing}", "",
     ["plugins[0].class: 'plugins/mine.py' has no class 'Missing'"]),
    ("- {name: x, class: plugins/mine.py:NotAPlugin}", "",
     ["plugins[0].class: 'plugins/mine.py:NotAPlugin' is not a gateway.plugin.Plugin subclass"]),
    ("- {name: x, class: plugins/mine.py:CONSTANT}", "",
     ["plugins[0].class: 'plugins/mine.py:CONSTANT' is not a gateway.plugin.Plugin subclass"]),
    ("- {name: x, class: plugins/mine.py:Picky, config: {mode: c}}", "",
     ["plugins[0].config: Picky refused its config: ValueError: mode must be a or b"]),
    ("- {name: x, class: plugins/mine.py:NeedsKey}", "",
     ["plugins[0].config: NeedsKey refused its config: KeyError: 'key'"]),
    ("- {name: x, class: plugins/mine.py:Buggy}", "",
     ["plugins[0].config: Buggy refused its config: RuntimeError: boom"]),
    ("- {name: x, class: plugins/mine.py:Good, config: [1]}", "", ["plugins[0].config: expected a mapping, got a list"]),
    ("- {name: x, class: plugins/mine.py:Good, colour: red}", "", ["plugins[0].colour: unknown key"]),
    ("- {class: plugins/mine.py:Good}", "", ["plugins[0].name: is required"]),
    ("- {name: x}", "", ["plugins[0].class: is required"]),
    ("- {name: x, class: plugins/mine.py:Good}\n- {name: x, class: plugins/mine.py:Good}", "",
     ["plugins[1].name: duplicate plugin name 'x' (also plugins[0])"]),
    ("- {name: x, class: plugins/mine.py:Good}", ", plugins: [y]", ["routes[0].plugins: unknown plugin 'y' (plugins: x)"]),
    ("- {name: x, class: plugins/mine.py:Good}", ", plugins: [x, x]", ["routes[0].plugins: lists a plugin twice"]),
    # a plugin that fails to load is reported once, not again by every route that lists it
    ("- {name: x, class: plugins/mine.py:Buggy}", ", plugins: [x]",
     ["plugins[0].config: Buggy refused its config: RuntimeError: boom"]),
])
def test_plugin_mistakes_are_problems_with_their_location(tmp_path: Path, plugins: str, routes: str,
                                                          expected: list[str]) -> None:
    assert problems(tmp_path, plugins, routes) == expected


def test_the_section_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("plugins: {a: 1}\n")
    assert caught.value.problems == ["plugins: expected a list of plugins, got a mapping"]


def test_every_load_builds_the_plugins_anew(tmp_path: Path) -> None:
    first = load(tmp_path, "- {name: x, class: plugins/mine.py:Good}")
    second = load(tmp_path, "- {name: x, class: plugins/mine.py:Good}")
    assert first.plugins[0].plugin is not second.plugins[0].plugin  # type: ignore[attr-defined]
    assert type(first.plugins[0].plugin) is not type(second.plugins[0].plugin)  # the file ran again  # type: ignore[attr-defined]
