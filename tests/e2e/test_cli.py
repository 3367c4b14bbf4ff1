"""The commands (SPEC §2) as an operator and a client developer use them: real processes, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = [str(Path(sys.executable).with_name("gateway"))] if Path(sys.executable).with_name("gateway").exists() \
    else [sys.executable, "run.py"]

BAD_CONFIG = """\
server:
  port: ${GW_CLI_TEST_UNSET}
  colour: blue
auth:
  jwt: {algorithms: [none, HS256], secret: short}
upstreams:
  orders: {targets: ["http://127.0.0.1:9001", "ftp://nope"]}
routes:
  - {name: a, path: /a, upstream: orders}
  - {name: b, path: /b, upstream: orders}
  - {name: c, path: /c, upstream: ordrs}
"""
BAD_PROBLEMS = [
    "server.port: environment variable GW_CLI_TEST_UNSET is not set",
    "server.colour: unknown key",
    "auth.jwt.algorithms: 'none' is never allowed",
    "auth.jwt.secret: must be at least 32 bytes for HS256",
    "upstreams.orders.targets[1]: 'ftp://nope' is not a valid http(s) target URL",
    "routes[2].upstream: unknown upstream 'ordrs'",
]


def run(*args: str, timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_ok_on_the_shipped_config() -> None:
    result = run("check", "-c", "conf/gateway.yaml")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_check_reports_every_problem_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_CONFIG)
    result = run("check", "-c", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [*BAD_PROBLEMS, f"{len(BAD_PROBLEMS)} problem(s) in {bad}"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["serve", "-c", "{bad}"], ["-c", "{bad}"], ["check", "-c", "{missing}"],
                                  ["serve", "-c", "{missing}"]])
def test_bad_config_exits_2_without_traceback(tmp_path: Path, args: list[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_CONFIG)
    missing = tmp_path / "missing.yaml"
    result = run(*[a.format(bad=bad, missing=missing) for a in args])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    if "{bad}" in args:
        assert "routes[2].upstream: unknown upstream 'ordrs'" in result.stderr.splitlines()
    else:
        assert result.stderr.splitlines()[0] == f"{missing}: cannot read: No such file or directory"


def test_routes_prints_the_table_in_matching_order(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("""\
upstreams:
  a: {targets: ["http://127.0.0.1:9001"]}
routes:
  - {name: short, path: /api, upstream: a}
  - {name: long, path: /api/orders, upstream: a, methods: [GET, POST]}
  - {name: hosted, path: /api, upstream: a, host: api.example.com}
""")
    result = run("routes", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["NAME", "HOST", "PATH", "METHODS", "TARGET", "AUTH"],
        ["hosted", "api.example.com", "/api", "*", "a", "none"],
        ["long", "*", "/api/orders", "GET,POST", "a", "none"],
        ["short", "*", "/api", "*", "a", "none"],
    ]


# --- run.py as a subprocess, driven with requests ---


class Recorder(RequestHandler):
    """Records each request and answers with what it saw."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # type: ignore[assignment]

    def initialize(self, seen: list[dict[str, object]]) -> None:
        self.seen = seen

    def _record(self) -> None:
        entry = {"method": self.request.method, "path": self.request.path, "query": self.request.query,
                 "headers": dict(self.request.headers.get_all()), "body": self.request.body}
        self.seen.append(entry)
        self.set_header("Content-Type", "application/json")
        self.set_header("Set-Cookie", "session=abc; Path=/")
        self.finish(json.dumps({"method": entry["method"], "path": entry["path"], "query": entry["query"]}))

    get = head = post = put = patch = delete = options = _record


class ThreadedUpstream:
    """A Tornado upstream on its own loop in a thread, so blocking `requests` calls cannot stall it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = HTTPServer(Application([(r".*", Recorder, {"seen": self.seen})]))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        server.add_sockets([sock])
        self.port = sock.getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    def close(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def wait_for_port(port: int, proc: subprocess.Popen[str], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if a failed test left it running, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ThreadedUpstream]]:
    upstream = ThreadedUpstream()
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""\
server: {{host: 127.0.0.1, port: {port}, drain_seconds: 2}}
admin: {{host: 127.0.0.1, port: {free_port()}}}
upstreams:
  app: {{targets: ["http://127.0.0.1:{upstream.port}"]}}
routes:
  - {{name: api, path: /api, upstream: app, strip_prefix: true}}
logging: {{level: warning, format: text}}
""")
    proc = subprocess.Popen([sys.executable, "run.py", "-c", str(config)], cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}", upstream
        assert stop(proc) == 0
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        reap(proc)
        upstream.close()


def test_run_py_serves_client_code_written_with_requests(served: tuple[str, ThreadedUpstream]) -> None:
    base, upstream = served
    with requests.Session() as session:
        resp = session.get(base + "/api/items", params={"q": "a b", "tag": ["x", "y"]},
                           headers={"X-Trace": "t-1"}, timeout=10)
        assert resp.status_code == 200
        assert resp.json() == {"method": "GET", "path": "/items", "query": "q=a+b&tag=x&tag=y"}
        assert resp.cookies.get("session") == "abc"
        assert len(resp.headers["X-Request-Id"]) == 32

        resp = session.post(base + "/api/orders", json={"item": "book", "qty": 2}, timeout=10)
        assert resp.status_code == 200
        resp = session.put(base + "/api/orders/7", data={"state": "paid", "note": "ünï"}, timeout=10)
        assert resp.status_code == 200
        resp = session.post(base + "/api/upload", files={"file": ("report.csv", b"a,b\n1,2\n", "text/csv")},
                            data={"kind": "csv"}, timeout=10)
        assert resp.status_code == 200
        resp = session.delete(base + "/api/orders/7", timeout=10)
        assert resp.status_code == 200
        resp = session.get(base + "/nowhere", timeout=10)
        assert resp.status_code == 404 and resp.json()["error"] == "no_route"

    get, post_json, put_form, post_files, delete = upstream.seen
    assert get["headers"]["X-Trace"] == "t-1"
    assert get["headers"]["X-Forwarded-Prefix"] == "/api"
    assert get["body"] == b""
    assert (post_json["method"], post_json["path"]) == ("POST", "/orders")
    assert post_json["headers"]["Content-Type"] == "application/json"
    assert json.loads(post_json["body"]) == {"item": "book", "qty": 2}  # type: ignore[arg-type]
    assert put_form["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert put_form["body"] == b"state=paid&note=%C3%BCn%C3%AF"
    content_type = post_files["headers"]["Content-Type"]
    assert isinstance(content_type, str) and content_type.startswith("multipart/form-data; boundary=")
    body = post_files["body"]
    assert isinstance(body, bytes)
    assert b'Content-Disposition: form-data; name="file"; filename="report.csv"' in body
    assert b"a,b\n1,2\n" in body and b'name="kind"\r\n\r\ncsv' in body
    assert post_files["headers"]["Content-Length"] == str(len(body))
    assert (delete["method"], delete["path"]) == ("DELETE", "/orders/7")


def test_demo_prints_three_curl_lines_that_work_as_printed() -> None:
    port, admin_port = free_port(), free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_ADMIN_PORT": str(admin_port)}
    proc = subprocess.Popen([sys.executable, "run.py", "--demo"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    try:
        curls: list[str] = []
        deadline = time.monotonic() + 20
        while len(curls) < 3:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the demo printed {len(curls)} curl lines") from None
            if line.strip().startswith("curl "):
                curls.append(line.strip())
        assert all(f"http://127.0.0.1:{port}/" in line for line in curls)
        for line in curls:
            printed = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=10)
            assert printed.returncode == 0, printed.stderr
            echoed = json.loads(printed.stdout)  # the echo upstream's description, not an error
            assert "error" not in echoed and echoed["method"] in ("GET", "POST")
            status = subprocess.run(["bash", "-c", line + " -o /dev/null -w '%{http_code}'"],
                                    capture_output=True, text=True, timeout=10)
            assert status.stdout == "200", (line, status.stdout)
        assert stop(proc) == 0
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        reap(proc)


# --- operator mistakes: one line, the right exit code, no traceback (issue 13, finding 12) ---

ROUTES = """\
upstreams:
  orders: {targets: ["http://127.0.0.1:9001"]}
routes:
  - {name: orders, path: /orders, upstream: orders}
"""


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("section, processes", [("server", 1), ("server", 2), ("admin", 1), ("admin", 2)])
def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path, taken_port: int, section: str,
                                               processes: int) -> None:
    main_port, admin_port = (taken_port, free_port()) if section == "server" else (free_port(), taken_port)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"server: {{host: 127.0.0.1, port: {main_port}, processes: {processes}}}\n"
                      f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n" + ROUTES)
    result = run("serve", "-c", str(config))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"{section}: cannot listen on 127.0.0.1:{taken_port}: Address already in use\n"
    if section == "admin":  # the main port bound first was let go again
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", main_port))


def write_key(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {"private": write_key(tmp_path / "private.pem", private),
            "public": write_key(tmp_path / "public.pem", public),
            "text": write_key(tmp_path / "notes.txt", "not a key\n"),
            "missing": str(tmp_path / "missing.pem")}


TOKEN_MISTAKES = [
    (["--key", "{missing}"], "--key {missing}: No such file or directory"),
    (["--key", "{public}"], "--key {public}: cannot sign with RS256: not an unencrypted PEM private key"),
    (["--key", "{text}"], "--key {text}: cannot sign with RS256: not an unencrypted PEM private key"),
    (["--key", "{private}", "--alg", "ES256"],
     "--key {private}: cannot sign with ES256: this RSAPrivateKey signs only PS256, PS384, PS512, RS256, RS384, RS512"),
    (["--alg", "XS256"], "--alg XS256: unknown algorithm (supported: ES256, ES256K, ES384, ES512, EdDSA, HS256, "
                         "HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512)"),
    (["--ttl", "-5"], "--ttl -5: must be a positive number of seconds"),
    (["--ttl", "0"], "--ttl 0: must be a positive number of seconds"),
]


@pytest.mark.parametrize("args, message", TOKEN_MISTAKES, ids=[" ".join(a) for a, _ in TOKEN_MISTAKES])
def test_token_mistakes_are_one_line_and_exit_2(pem_files: dict[str, str], args: list[str], message: str) -> None:
    result = run("token", "--sub", "alice", *[a.format(**pem_files) for a in args])
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"gateway token: {message.format(**pem_files)}\n"


SCP_CONFIG = """\
auth:
  jwt:
    algorithms: [{alg}]
    {key}
    scope_claim: scp
    audience: orders-api
    issuer: https://idp.test
"""


@pytest.mark.parametrize("alg", ["HS256", "RS256"])
def test_token_puts_the_scopes_in_the_configured_scope_claim(tmp_path: Path, pem_files: dict[str, str],
                                                             alg: str) -> None:
    import jwt

    secret = "cli-test-secret-0123456789abcdef-0123"
    config = tmp_path / "gateway.yaml"
    key_line = f"secret: {secret}" if alg == "HS256" else f"public_key_file: {pem_files['public']}"
    config.write_text(SCP_CONFIG.format(alg=alg, key=key_line))
    extra = [] if alg == "HS256" else ["--key", pem_files["private"]]
    result = run("token", "-c", str(config), "--sub", "alice", "--scope", "orders:read orders:write", *extra)
    assert (result.returncode, result.stderr) == (0, "")
    claims = jwt.decode(result.stdout.strip(), options={"verify_signature": False})
    assert claims["scp"] == "orders:read orders:write"
    assert "scope" not in claims
    assert (claims["aud"], claims["iss"]) == ("orders-api", "https://idp.test")


CHECK_MISTAKES = [
    ("duplicate keys", """\
server:
  host: 127.0.0.1
  port: 8080
  port: 8081
upstreams:
  orders: {targets: ["http://127.0.0.1:9001"]}
  orders: {targets: ["http://127.0.0.1:9002"]}
routes:
  - {name: orders, path: /orders, upstream: orders, upstream: orders}
""", ["line 4: duplicate key 'port' in server (first given on line 3)",
      "line 7: duplicate key 'orders' in upstreams (first given on line 6)",
      "line 9: duplicate key 'upstream' in routes[0] (first given on line 9)"]),
    ("empty", "", ["(top level): the configuration is empty (only comments or nothing): there is nothing to serve"]),
    ("only comments", "# routes:\n#   - {name: a}\n",
     ["(top level): the configuration is empty (only comments or nothing): there is nothing to serve"]),
    ("same routes", ROUTES + """\
  - {name: orders, path: /orders/, upstream: orders, methods: [GET]}
  - {name: reads, path: /orders, upstream: orders, methods: [GET, HEAD]}
  - {name: writes, path: /orders, upstream: orders, methods: [POST]}
  - {name: all, path: /orders, upstream: orders}
""", ["routes[1].name: duplicate route name 'orders' (also routes[0])",
      "routes[4]: same host, path and methods as routes[0] ('orders')"]),
    ("TRACE", ROUTES + "  - {name: trace, path: /t, upstream: orders, methods: [TRACE]}\n",
     ["routes[1].methods: item 0: 'TRACE' is not proxied (supported: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"]),
]


@pytest.mark.parametrize("text, problems", [c[1:] for c in CHECK_MISTAKES], ids=[c[0] for c in CHECK_MISTAKES])
def test_check_refuses_what_used_to_pass_silently(tmp_path: Path, text: str, problems: list[str]) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    result = run("check", "-c", str(config))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [*problems, f"{len(problems)} problem(s) in {config}"]


def test_json_logs_carry_an_iso_8601_utc_timestamp(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"server: {{host: 127.0.0.1, port: {port}}}\nadmin: {{host: 127.0.0.1, port: {free_port()}}}\n"
                      "logging: {format: json}\n" + ROUTES)
    proc = subprocess.Popen([*GATEWAY, "serve", "-c", str(config)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            while sock.recv(4096):
                pass
        assert stop(proc) == 0
        assert proc.stderr is not None and proc.stdout is not None
        operational = [json.loads(line) for line in proc.stderr.read().splitlines()]
        access = [json.loads(line) for line in proc.stdout.read().splitlines()]
    finally:
        reap(proc)
    assert operational[0]["message"] == f"gateway listening on 127.0.0.1:{port}"
    assert len(access) == 1 and access[0]["status"] == 404
    for entry in [*operational, *access]:
        ts = entry["ts"]
        assert len(ts) == 24 and ts.endswith("Z") and ts[10] == "T", ts
        parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs(parsed.timestamp() - time.time()) < 60
