"""The ``gateway`` command: its arguments (argparse) and the commands, serve | check | token | key | routes | schema.

Each command is a few lines over the modules that do the work: loading
(:mod:`gateway.loader`), the runtime, tokens (:mod:`gateway.tokens`), logging
(:mod:`gateway.logs`), serving (:mod:`gateway.process`) and the config's JSON Schema
(:mod:`gateway.schema`).

A configuration problem is printed (every one, with its location) and the
command exits 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, GatewayConfig
from .loader import load_config
from .logs import configure_logging

DEFAULT_CONFIG = "conf/gateway.yaml"
EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.demo:
            from .demo import run_demo
            return run_demo()
        command = args.command or "serve"
        return {"serve": _serve, "check": _check, "token": _token, "routes": _routes,
                "schema": _schema, "key": _key}[command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {_config_path(args)}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="An async API gateway on Tornado.")
    parser.add_argument("--demo", action="store_true", help="serve conf/demo.yaml with a bundled echo upstream")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    # None: not given (a default would hide whether `gateway token` was pointed at a file)
    parser.add_argument("-c", "--config", default=None, help=f"config file (default {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command")
    for name, text in (("serve", "run the gateway"), ("check", "validate a config"),
                       ("routes", "print the route table as it will be matched")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", default=argparse.SUPPRESS)
    sub.add_parser("schema", help="print the config file's JSON Schema (draft 2020-12), for editors")
    p = sub.add_parser("token", help="mint a token for local testing")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS)
    p.add_argument("--sub", required=True, help="the subject (sub claim)")
    p.add_argument("--scope", default=None, help='space-separated scopes, e.g. "orders:read orders:write"')
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds, positive (default 3600)")
    p.add_argument("--aud", default=None)
    p.add_argument("--iss", default=None)
    p.add_argument("--claim", action="append", default=[], metavar="K=V", help="an extra claim (repeatable)")
    p.add_argument("--key", default=None, help="private key PEM for RS*/PS*/ES*/EdDSA (with -c, the config still "
                                                "gives scope_claim, aud and iss)")
    p.add_argument("--alg", default=None, help="algorithm (default: the config's first, RS256 with --key)")
    p.add_argument("--kid", default=None)
    p = sub.add_parser("key", help="make a new random API key and its auth.api_keys consumer line")
    p.add_argument("--subject", required=True, help="the consumer's subject (its identity, as a token's sub)")
    p.add_argument("--scope", default="", help='space-separated scopes, e.g. "orders:read orders:write"')
    return parser


def _config_path(args: argparse.Namespace) -> str:
    return getattr(args, "config", None) or DEFAULT_CONFIG


def _load(args: argparse.Namespace) -> GatewayConfig:
    config = load_config(_config_path(args))
    from .runtime import Runtime  # building the runtime finds what only building can (keys, TLS files)

    Runtime(config)
    return config


def _check(args: argparse.Namespace) -> int:
    _load(args)
    print("ok")
    return 0


def _routes(args: argparse.Namespace) -> int:
    from .routing import RouteTable

    config = load_config(_config_path(args))
    rows = RouteTable(config.routes).describe()
    headers = ("name", "host", "path", "methods", "target", "auth")
    table = [[str(r[h]) if h != "methods" else ",".join(r[h]) for h in headers] for r in rows]  # type: ignore[arg-type]
    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return 0


def _schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the config file; conf/gateway.schema.json is this output."""
    from .schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def _token(args: argparse.Namespace) -> int:
    """Mint a token. A wrong argument is one line on stderr and exit 2, never a traceback."""
    from .tables import JWT_ALGORITHMS
    from .tokens import mint_token

    claims: dict[str, object] = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep or not name:
            return _usage(f"--claim {item!r}: expected K=V")
        try:
            claims[name] = json.loads(value)
        except ValueError:
            claims[name] = value
    if args.ttl <= 0:
        return _usage(f"--ttl {args.ttl}: must be a positive number of seconds")
    if args.alg is not None and args.alg not in JWT_ALGORITHMS:
        return _usage(f"--alg {args.alg}: unknown algorithm (supported: {', '.join(sorted(JWT_ALGORITHMS))})")
    jwt_config = None
    if args.key:
        try:
            with open(args.key, "rb") as f:
                key: str | bytes = f.read()
        except OSError as exc:
            return _usage(f"--key {args.key}: {exc.strerror or exc}")
        algorithm = args.alg or "RS256"
        if getattr(args, "config", None):  # the claims the gateway reads: scope_claim, aud, iss
            jwt_config = load_config(args.config).auth.jwt
    else:
        path = _config_path(args)
        jwt_config = load_config(path).auth.jwt
        if jwt_config is None or not jwt_config.secret:
            raise ConfigError([f"{path}: auth.jwt.secret: needed to mint a token (or pass --key private.pem)"])
        key = jwt_config.secret
        algorithm = args.alg or jwt_config.algorithms[0]
    try:
        token = mint_token(
            key=key, algorithm=algorithm, subject=args.sub, scopes=args.scope, ttl_seconds=args.ttl,
            audience=args.aud or (jwt_config.audience[0] if jwt_config and jwt_config.audience else None),
            issuer=args.iss or (jwt_config.issuer if jwt_config else None), extra_claims=claims, kid=args.kid,
            scope_claim=jwt_config.scope_claim if jwt_config else "scope",
        )
    except ValueError as exc:  # a key unfit for the algorithm, not a private key, ...
        return _usage(f"--key {args.key}: {exc}" if args.key else str(exc))
    print(token)
    return 0


def _usage(message: str, command: str = "token") -> int:
    print(f"gateway {command}: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _key(args: argparse.Namespace) -> int:
    """Print a new random key (line 1: give it to the consumer) and the consumer entry for
    ``auth.api_keys.consumers`` holding only its SHA-256 (line 2). The key is stored nowhere."""
    from .apikeys import digest_of, new_key

    subject = args.subject
    if not subject or any(ord(c) < 0x20 or ord(c) == 0x7F for c in subject):
        return _usage("--subject: must be non-empty, without control characters", "key")
    key = new_key()
    scopes = ", ".join(json.dumps(scope) for scope in args.scope.split())
    print(key)
    # JSON strings are YAML flow scalars: any subject or scope is quoted safely.
    print(f"- {{subject: {json.dumps(subject)}, key_sha256: {digest_of(key).hex()}, scopes: [{scopes}]}}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    # gateway.process imports the server (and prometheus_client) only once it knows
    # whether the metrics must be shared by several worker processes.
    from .process import run

    config = _load(args)
    configure_logging(config)
    return run(args.config, config)


if __name__ == "__main__":
    sys.exit(main())
