"""YAML + ``${VAR:-default}`` → :class:`~gateway.config.GatewayConfig`.

Problems are collected, not raised one at a time: :func:`load_config` raises a single
:class:`~gateway.config.ConfigError` listing each problem with its location
(``routes[2].upstream: unknown upstream 'ordrs'``). The way there, each step one module's:

1. :mod:`gateway.yamldoc` reads the YAML as hostile input (duplicate keys, alias bombs) and
   replaces the ``${VAR:-default}`` references, typing a whole-scalar reference like YAML;
2. the models of :mod:`gateway.schema` validate it (pydantic, strict), the same models that
   print the JSON Schema; :mod:`gateway.configerrors` turns their errors into the problems;
3. :mod:`gateway.configchecks` checks what the models cannot (cross-references, plugins);
4. :func:`build` turns the validated models into the frozen dataclasses of :mod:`gateway.config`.

When validation finds problems, step 3 still runs, on what :func:`salvage` keeps, so one run
reports the unknown upstream beside the mistyped port.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from .config import CompressionConfig, ConfigError, GatewayConfig, Origin, TargetConfig
from .configchecks import Derived, check
from .configerrors import Located
from .configtypes import AUTH_METHODS
from .schema import Compression, ConfigFile, Section, Target, Upstream
from .yamldoc import Problems, printable, read_document, substitute

__all__ = ["load_config", "parse_config", "build", "salvage", "ConfigError"]


def load_config(path: str, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the YAML file at ``path``. Raises ConfigError with every problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_config(text, source=path, environ=environ)


def parse_config(text: str, source: str = "<string>", environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate YAML ``text``. Raises ConfigError with every problem, each with its location."""
    problems = Problems()
    raw = read_document(text, source, problems)
    if raw is None:
        problems.add("", "the configuration is empty (only comments or nothing): there is nothing to serve")
        raw = {}
    raw = substitute(raw, "", os.environ if environ is None else environ, problems)
    base_dir = os.path.dirname(os.path.abspath(source)) if source != "<string>" else "."
    context = {"base_dir": base_dir}
    located = Located()
    doc: ConfigFile | None = None
    try:
        doc = ConfigFile.model_validate(raw, context=context)
    except ValidationError as exc:
        located.add_errors(exc)
    parts = doc if doc is not None else salvage(ConfigFile, raw, context)
    derived = Derived()
    if parts is not None:
        derived = check(parts, _upstream_names(raw), _auth_given(raw), located, base_dir)
    if problems or located or doc is None:
        found = [printable(problem) for problem in problems] + located.lines(raw)
        raise ConfigError(found or ["(top level): the configuration cannot be loaded"])
    return _build_file(doc, derived, source)


def _upstream_names(raw: Any) -> set[str]:
    upstreams = raw.get("upstreams") if isinstance(raw, dict) else None
    return {str(name) for name in upstreams} if isinstance(upstreams, dict) else set()


def _auth_given(raw: Any) -> tuple[str, ...]:
    """The auth methods whose section the file gives (``jwt``, ``api_key``), valid or not."""
    auth = raw.get("auth") if isinstance(raw, dict) else None
    if not isinstance(auth, dict):
        return ()
    return tuple(method for method, key in zip(AUTH_METHODS, ("jwt", "api_keys"), strict=True)
                 if auth.get(key) is not None)


# --- validated models → dataclasses ---

def build(section: Section, **given: Any) -> Any:
    """The dataclass ``section.builds`` from the keys given in the file (the dataclass's defaults for
    the rest), each nested section built too; ``given`` are values worked out elsewhere, which win.
    A field of ``section.into`` is passed as the attribute it names."""
    kw = dict(given)
    if isinstance(section, Upstream):  # a target's origin and base path come from its URL
        kw.setdefault("targets", tuple(_target(entry) for entry in section.targets))
    for name in section.model_fields_set:
        value = getattr(section, name)
        attribute = section.into.get(name, name)
        if attribute in kw or value is None:
            continue
        kw[attribute] = _loaded(value)
    if isinstance(section, Upstream):
        kw["targets"] = tuple(_target(entry) for entry in section.targets)
    return section.builds(**kw)


def _loaded(value: Any) -> Any:
    if isinstance(value, Section):
        return build(value)
    if isinstance(value, list):
        return tuple(_loaded(item) for item in value)
    if isinstance(value, dict):  # a mapping of sections gets each key as the section's name
        return {key: build(item, name=key) if isinstance(item, Section) else item for key, item in value.items()}
    return value


def _target(entry: str | Target) -> TargetConfig:
    url, weight = (entry, 1) if isinstance(entry, str) else (entry.url, entry.weight)
    parts = urlsplit(url)  # checked by configtypes.parse_target_url
    hostname = parts.hostname or ""
    origin = Origin(parts.scheme, hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return TargetConfig(url=url, origin=origin, base_path=parts.path.rstrip("/"), weight=weight)


def _build_file(doc: ConfigFile, derived: Derived, source: str) -> GatewayConfig:
    routes = tuple(build(route, **derived.routes.get(i, {})) for i, route in enumerate(doc.routes or ()))
    plugins = tuple(build(plugin, config=plugin.config or {}, plugin=derived.plugins[plugin.name])
                    for plugin in doc.plugins or ())
    config: GatewayConfig = build(doc, routes=routes, plugins=plugins, source=source,
                                  compression=_global_compression(doc.compression))
    return config


def _global_compression(value: bool | Compression | None) -> CompressionConfig | None:
    """The global ``compression``: ``true`` is the defaults, ``false`` (or nothing) none; a route's own
    ``true``/``false`` is kept as written (the runtime reads it against the global section)."""
    if isinstance(value, Compression):
        built: CompressionConfig = build(value)
        return built
    return CompressionConfig() if value is True else None


# --- salvage: what of an invalid file the checks can still look at ---

def salvage(model: type[Section], raw: Any, context: dict[str, Any]) -> Any:
    """``raw`` validated as ``model`` without its bad keys, or None when that leaves it invalid
    (not a mapping, a required key missing or wrong). A bad key holding a section, or a list or
    mapping of them, with its problems inside, is salvaged in turn (an item that cannot be is None);
    a required one too (``api_keys.consumers``: one broken consumer does not hide a key named twice).
    Only for the checks: the result is not a valid model."""
    if not isinstance(raw, dict):
        return None
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        errors = exc.errors()
    if any(not error["loc"] for error in errors):
        return None
    bad = {error["loc"][0] for error in errors}
    refused = {error["loc"][0] for error in errors if len(error["loc"]) == 1}  # the value itself, not inside it
    rest = {k: v for k, v in raw.items() if k not in bad}
    try:
        part = model.model_validate(rest, context=context)
    except ValidationError as exc:  # a required key left out with its problems inside (api_keys.consumers)
        part = _without_required(model, rest, exc, bad - refused, context)
        if part is None:
            return None
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in bad and key not in refused and key in raw:
            value = _salvage_value(info.annotation, raw[key], context)
            if value is not None:
                setattr(part, name, value)
            elif info.is_required():
                return None
    return part


def _without_required(model: type[Section], rest: dict[Any, Any], exc: ValidationError, salvageable: set[Any],
                      context: dict[str, Any]) -> Any:
    """``rest`` as ``model`` when all it lacks are required keys that are salvaged after (else None):
    its keys validated one by one onto an instance built without validation."""
    if not all(error["type"] == "missing" and error["loc"][0] in salvageable for error in exc.errors()):
        return None
    part = model.model_construct(_fields_set=set())
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in rest:
            model.__pydantic_validator__.validate_assignment(part, name, rest[key], context=context)
    return part


def _salvage_value(annotation: Any, raw: Any, context: dict[str, Any]) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _salvage_value(args[0], raw, context)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        return _salvage_value(members[0], raw, context) if len(members) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return salvage(annotation, raw, context)
    if origin is list and isinstance(raw, list):
        return [_salvage_value(args[0], item, context) for item in raw]
    if origin is dict and isinstance(raw, dict):
        return {str(key): _salvage_value(args[1], item, context) for key, item in raw.items()}
    return None
