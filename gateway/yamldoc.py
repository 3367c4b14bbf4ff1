"""A YAML document read as hostile input, and its ``${VAR:-default}`` references.

The loader's first half: text → plain data (mappings, lists, scalars), with problems
collected rather than raised. A configuration file is input like any other, so
:func:`read_document` refuses what YAML alone would let through or choke on: a key given
twice in one mapping (YAML keeps the last one silently), a recursive alias, an alias bomb
(a document whose aliases expand it past :data:`MAX_EXPANDED_VALUES` values), and
characters YAML does not allow; :func:`printable` keeps a control character from the file
from breaking a problem's line.

Environment references are replaced after parsing, scalar by scalar (:func:`substitute`),
so a secret full of YAML punctuation stays one string; a scalar that is exactly one
reference is then typed like a YAML scalar (``port: ${PORT}`` gives a number), and a number
so made remembers its text (:class:`EnvText`) for keys that want a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from .config import ConfigError

__all__ = ["MAX_EXPANDED_VALUES", "UNSET", "EnvText", "Problems", "join_path", "printable", "read_document",
           "substitute"]


def read_document(text: str, source: str, problems: Problems) -> Any:
    """The data of the one YAML document in ``text`` (None when it is empty). Duplicate keys are
    added to ``problems``; a document that cannot be read at all raises ConfigError."""
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # refuses characters YAML does not allow, such as \x1f
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            too_large = _expanded_size(node, {}) > MAX_EXPANDED_VALUES
        except _RecursiveAlias as exc:
            raise ConfigError([f"{source}:{exc.node.start_mark.line + 1}: an alias refers to the value "
                               "that holds it (a recursive structure)"]) from None
        if too_large:
            raise ConfigError([f"{source}: the document expands to more than {MAX_EXPANDED_VALUES} values "
                               "through its aliases"])
        _check_duplicate_keys(node, "", problems, set())
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# A control character from the file (a "\r" in a value, say) must not break a problem's line.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(32), 127)} | {9: "\\t", 10: "\\n", 13: "\\r"}


def printable(problem: str) -> str:
    return problem if problem.isprintable() else problem.translate(_CONTROL_ESCAPES)


class Problems(list):  # type: ignore[type-arg]
    """Every problem found, each ``location: message``; collected, not raised one at a time."""

    def add(self, path: str, message: str) -> None:
        self.append(f"{path or '(top level)'}: {message}")


# A config has hundreds of values; a "billion laughs" of nested aliases has billions once expanded,
# and every later pass (substitution, building) would walk each of them.
MAX_EXPANDED_VALUES = 100_000


class _RecursiveAlias(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias in it is expanded (memoised per node,
    so the count itself stays linear in the document)."""
    known = sizes.get(id(node))
    if known is not None:
        if known < 0:  # still being counted: the node holds an alias of itself
            raise _RecursiveAlias(node)
        return known
    sizes[id(node)] = -1
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    sizes[id(node)] = size = min(size, MAX_EXPANDED_VALUES + 1)
    return size


def _check_duplicate_keys(node: yaml.Node, path: str, problems: Problems, seen: set[int]) -> None:
    """Report every key given twice in one mapping, at any depth (YAML would keep the last
    silently): ``line 7: duplicate key 'port' in server``. ``seen`` holds the nodes already
    walked, so an alias is walked once however often it is used."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, Any], int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, name) in first:
                    where = f"in {path}" if path else "at the top level"
                    problems.append(f"line {line}: duplicate key '{name}' {where} "
                                    f"(first given on line {first[key.tag, name]})")
                else:
                    first[key.tag, name] = line
            _check_duplicate_keys(value, join_path(path, name if name is not None else "?"), problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, join_path(path, index), problems, seen)


class Unset:
    """An environment reference that could not be resolved (already reported)."""


UNSET = Unset()


def join_path(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not isinstance(key, str) or not key.isprintable():
        return f"{path}[{key!r}]"  # a key with a line break or control character must not break the report's line
    return f"{path}.{key}" if path else key


def substitute(value: Any, path: str, environ: Mapping[str, str], problems: Problems) -> Any:
    if isinstance(value, dict):
        return {k: substitute(v, join_path(path, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, join_path(path, i), environ, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and (environ[name] != "" or default is None):
            return environ[name]
        if default is not None:
            return default
        problems.add(path, f"environment variable {name} is not set")
        return ""

    if any(m.group(1) not in environ and m.group(2) is None for m in _ENV_REF.finditer(value)):
        _ENV_REF.sub(replace, value)
        return UNSET
    result = _ENV_REF.sub(replace, value)
    if _ENV_REF.fullmatch(value) and result.strip():
        typed = yaml.safe_load(result)
        if isinstance(typed, bool) or typed is None:
            return typed
        if isinstance(typed, (int, float)):
            return _remembering(typed, result)
    return result


class EnvText:
    """A number from the environment that remembers its text, for string keys (``secret: ${S}``)."""

    text: str


class EnvInt(EnvText, int):
    pass


class EnvFloat(EnvText, float):
    pass


def _remembering(number: int | float, text: str) -> EnvInt | EnvFloat:
    typed = EnvFloat(number) if isinstance(number, float) else EnvInt(number)
    typed.text = text
    return typed
