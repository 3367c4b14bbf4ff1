"""The loader's problems: pydantic's errors translated, located, and listed in the order of the file.

Every problem is ``location: message`` (``routes[2].upstream: unknown upstream 'ordrs'``), the
location in the file's own keys and indexes. :class:`Located` collects problems as (location
tuple, message) from two sources: pydantic's ErrorDetails (:meth:`Located.add_errors`, the one
place that turns them into an operator's words) and the checks after validation
(:mod:`gateway.configchecks`). :meth:`Located.lines` prints them in the order of the file: by
the position of each key in its mapping, the keys not given (``is required``) after those given,
a section's own problems (and the checks of its keys together) after those of each key, and
``routes`` after every other section (routes are checked against the upstreams, auth and plugins).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .configtypes import GATEWAY_ERROR, UNSET_ERROR, kind
from .schema import TAGS
from .yamldoc import UNSET, join_path, printable

__all__ = ["Loc", "Located", "translate"]

Loc = tuple[Any, ...]  # keys (any YAML scalar) and list indexes, outermost first

_LAST = 1 << 40  # after every key of a mapping


def translate(error: ErrorDetails) -> tuple[Loc, str] | None:
    """One pydantic error as (location, message), or None for one already reported (an unset
    ``${VAR}``). Locations lose the tags of tagged unions; the messages are the loader's."""
    loc = tuple(part for part in error["loc"] if part not in TAGS)
    kind_of_error = error["type"]
    if kind_of_error == GATEWAY_ERROR:
        return loc, str((error.get("ctx") or {})["message"])
    if kind_of_error in ("extra_forbidden", "invalid_key"):
        return loc, "unknown key"
    if kind_of_error == "missing":
        return loc, "is required"
    if kind_of_error == UNSET_ERROR or error.get("input") is UNSET:
        return None
    if kind_of_error in ("model_type", "model_attributes_type", "dict_type"):
        where = " at the top level" if not loc else ""
        return loc, f"expected a mapping{where}, got {kind(error['input'])}"
    if kind_of_error == "list_type":
        return loc, f"expected a list, got {kind(error['input'])}"
    return loc, error["msg"]  # nothing the models declare raises another kind; said as pydantic says it


class Located(list):  # type: ignore[type-arg]
    """Problems as (location, message, where it is listed); see the module's docstring for the order."""

    def add(self, loc: Loc, message: str, section: Loc | None = None) -> None:
        """A problem at ``loc``, listed with the problems of ``section`` (a check of a section's keys
        together comes after the problems of each key, as it did in the loader before the models)."""
        self.append((loc, message, loc if section is None else section))

    def add_errors(self, exc: ValidationError) -> None:
        for error in exc.errors():
            problem = translate(error)
            if problem is not None:
                self.add(*problem)

    def under(self, loc: Loc) -> bool:
        """Whether a problem was found at ``loc`` or inside it."""
        return any(found[:len(loc)] == loc for found, _, _ in self)

    def lines(self, raw: Any) -> list[str]:
        """Each problem as ``location: message``, in the order of the file ``raw`` (stable: the problems
        listed at one place keep the order they were found in)."""
        ordered = sorted(self, key=lambda problem: _position(raw, _resolve(raw, problem[2])))
        return [printable(f"{_path(_resolve(raw, loc)) or '(top level)'}: {message}") for loc, message, _ in ordered]


def _path(loc: Loc) -> str:
    path = ""
    for part in loc:
        path = join_path(path, part)
    return path


def _resolve(raw: Any, loc: Loc) -> Loc:
    """``loc`` with the file's own keys: pydantic writes a key ``true`` as 1 and ``null`` as 'None', and
    a mapping of sections is keyed by name (text); the problem names the key as the file has it."""
    resolved = []
    node = raw
    for part in loc:
        if isinstance(node, dict):
            if part not in node or type(next(k for k in node if k == part)) is not type(part):
                part = next((key for key in node if _same_key(key, part)), part)
            node = node.get(part)
        else:
            node = node[part] if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node) else None
        resolved.append(part)
    return tuple(resolved)


def _same_key(key: Any, part: Any) -> bool:
    if isinstance(key, bool) or key is None or not isinstance(key, str):
        return key == part or str(key) == part
    return False


def _position(raw: Any, loc: Loc) -> list[int]:
    position = []
    node = raw
    for depth, part in enumerate(loc):
        if isinstance(node, dict):
            if depth == 0 and part == "routes":
                rank = _LAST - 1
            else:
                rank = next((i for i, key in enumerate(node) if key == part and type(key) is type(part)), len(node))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            rank, node = part, node[part]
        else:
            rank, node = 0, None
        position.append(rank)
    position.append(_LAST)
    return position
