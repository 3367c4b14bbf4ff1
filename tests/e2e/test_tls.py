"""TLS both ways, with certificates made here: `server.tls` terminates HTTPS; `https://`
targets are verified (`tls.ca_file`), and present a client certificate for mTLS."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from tests.conftest import Fetch
from tests.support.certs import self_signed


class Echo(RequestHandler):
    """Answers what it saw: the forwarded protocol and the client certificate's subject."""

    def get(self, *_: str) -> None:
        peer = self.request.get_ssl_certificate() if self.request.protocol == "https" else None
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        self.finish({"proto": self.request.headers.get("X-Forwarded-Proto"),
                     "client_cert": subject.get("commonName")})


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    return {name: self_signed(tmp_path, name) for name in ("server", "upstream", "client")}


@pytest.fixture
def https_upstream(io_loop: Any) -> Iterator[Any]:
    servers: list[HTTPServer] = []

    def start(certfile: str, keyfile: str, client_ca: str | None = None, client_cert_required: bool = True) -> str:
        """An HTTPS echo server; with ``client_ca`` it asks for a client certificate (and refuses a
        handshake without one unless ``client_cert_required`` is False)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED if client_cert_required else ssl.CERT_OPTIONAL
            context.load_verify_locations(client_ca)
        server = HTTPServer(Application([(r".*", Echo)]), ssl_options=context)
        sock, port = bind_unused_port()
        server.add_sockets([sock])
        servers.append(server)
        return f"https://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop()
        io_loop.run_sync(server.close_all_connections)


def gateway_yaml(target: str, upstream_tls: str = "", server_tls: str = "") -> str:
    return f"""
    server: {{host: 127.0.0.1, port: 0, drain_seconds: 0.5{server_tls}}}
    admin: {{host: 127.0.0.1, port: 0}}
    upstreams:
      backend: {{targets: ["{target}"]{upstream_tls}, connect_timeout: 2}}
    routes:
      - {{name: api, path: /api, upstream: backend}}
    """


@pytest.mark.timeout(seconds=20)
async def test_the_listener_terminates_https(
        start_gateway: Any, start_upstream: Any, http: Fetch, certs: dict[str, tuple[str, str]]) -> None:
    upstream = start_upstream(Application([(r".*", Echo)]))
    certfile, keyfile = certs["server"]
    gateway = await start_gateway(gateway_yaml(upstream.url, server_tls=f", tls: {{certfile: {certfile}, keyfile: {keyfile}}}"))
    url = f"https://127.0.0.1:{gateway.port}/api/x"
    response = await http(url, ca_certs=certfile)
    assert response.code == 200
    assert json.loads(response.body) == {"proto": "https", "client_cert": None}
    with pytest.raises(ssl.SSLCertVerificationError):  # a client without the certificate does not trust it
        await http(url)


@pytest.mark.timeout(seconds=20)
async def test_https_upstream_is_verified_against_ca_file(
        start_gateway: Any, https_upstream: Any, http: Fetch, certs: dict[str, tuple[str, str]]) -> None:
    target = https_upstream(*certs["upstream"])
    trusted = await start_gateway(gateway_yaml(target, upstream_tls=f", tls: {{ca_file: {certs['upstream'][0]}}}"))
    response = await http(trusted.url + "/api/x")
    assert response.code == 200
    assert json.loads(response.body) == {"proto": "http", "client_cert": None}


@pytest.mark.timeout(seconds=20)
async def test_https_upstream_with_an_untrusted_certificate_is_a_bad_gateway(
        start_gateway: Any, https_upstream: Any, http: Fetch, certs: dict[str, tuple[str, str]]) -> None:
    target = https_upstream(*certs["upstream"])
    untrusted = await start_gateway(gateway_yaml(target))  # system CAs only
    response = await http(untrusted.url + "/api/x")
    assert response.code == 502
    assert json.loads(response.body)["error"] == "bad_gateway"
    wrong_ca = await start_gateway(gateway_yaml(target, upstream_tls=f", tls: {{ca_file: {certs['server'][0]}}}"))
    assert (await http(wrong_ca.url + "/api/x")).code == 502


@pytest.mark.timeout(seconds=20)
async def test_mtls_upstream_gets_the_client_certificate(
        start_gateway: Any, https_upstream: Any, http: Fetch, certs: dict[str, tuple[str, str]]) -> None:
    target = https_upstream(*certs["upstream"], client_ca=certs["client"][0])
    ca = certs["upstream"][0]
    client_cert, client_key = certs["client"]
    with_cert = await start_gateway(gateway_yaml(
        target, upstream_tls=f", tls: {{ca_file: {ca}, certfile: {client_cert}, keyfile: {client_key}}}"))
    response = await http(with_cert.url + "/api/x")
    assert response.code == 200
    assert json.loads(response.body)["client_cert"] == "client"
    without = await start_gateway(gateway_yaml(target, upstream_tls=f", tls: {{ca_file: {ca}}}"))
    assert (await http(without.url + "/api/x")).code == 502


def two_upstreams_yaml(target: str, tls_a: str, tls_b: str) -> str:
    """Upstreams ``a`` and ``b`` with the same target and their own TLS settings, behind /a and /b."""
    return f"""
    upstreams:
      a: {{targets: ["{target}"], tls: {tls_a}, connect_timeout: 2}}
      b: {{targets: ["{target}"]{tls_b}, connect_timeout: 2}}
    routes:
      - {{name: a, path: /a, upstream: a}}
      - {{name: b, path: /b, upstream: b}}
    """


@pytest.mark.timeout(seconds=20)
async def test_a_connection_trusted_under_one_ca_file_is_not_reused_by_an_upstream_without_it(
        start_gateway: Any, https_upstream: Any, http: Fetch, certs: dict[str, tuple[str, str]]) -> None:
    target = https_upstream(*certs["upstream"])
    gateway = await start_gateway(two_upstreams_yaml(target, f"{{ca_file: {certs['upstream'][0]}}}", ""))
    first = await http(gateway.url + "/a/x")
    assert first.code == 200
    assert json.loads(first.body) == {"proto": "http", "client_cert": None}
    second = await http(gateway.url + "/b/x")  # b trusts only the system CAs: its own handshake fails
    assert second.code == 502
    assert json.loads(second.body)["message"] == "the upstream could not be reached"
    assert (await http(gateway.url + "/a/y")).code == 200  # a's kept connection still serves a


@pytest.mark.timeout(seconds=20)
async def test_a_client_certificate_is_never_presented_on_behalf_of_another_upstream(
        start_gateway: Any, https_upstream: Any, http: Fetch, certs: dict[str, tuple[str, str]]) -> None:
    target = https_upstream(*certs["upstream"], client_ca=certs["client"][0], client_cert_required=False)
    ca = certs["upstream"][0]
    client_cert, client_key = certs["client"]
    gateway = await start_gateway(two_upstreams_yaml(
        target, f"{{ca_file: {ca}, certfile: {client_cert}, keyfile: {client_key}}}", f", tls: {{ca_file: {ca}}}"))
    for path, presented in [("/a/1", "client"), ("/b/1", None), ("/a/2", "client"), ("/b/2", None)]:
        response = await http(gateway.url + path)
        assert response.code == 200
        assert json.loads(response.body)["client_cert"] == presented, path


@pytest.mark.timeout(seconds=20)
async def test_a_failed_handshake_is_logged_with_the_request_id_and_not_shown(
        start_gateway: Any, https_upstream: Any, http: Fetch, certs: dict[str, tuple[str, str]],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    target = https_upstream(*certs["upstream"])
    gateway = await start_gateway(gateway_yaml(target))  # system CAs only: the self-signed certificate fails
    response = await http(gateway.url + "/api/x", headers={"X-Request-Id": "rid-tls"})
    assert response.code == 502
    assert json.loads(response.body) == {"error": "bad_gateway", "message": "the upstream could not be reached",
                                         "status": 502, "request_id": "rid-tls"}
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "rid-tls" in r.getMessage()]
    assert len(lines) == 1
    level, message = lines[0]
    assert level == logging.WARNING
    assert message.startswith(f"request_id=rid-tls 502 bad_gateway: cannot connect to {target}: "
                              "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), message


@pytest.mark.timeout(seconds=20)
async def test_health_checks_use_the_upstreams_own_tls_context(
        start_gateway: Any, https_upstream: Any, certs: dict[str, tuple[str, str]]) -> None:
    target = https_upstream(*certs["upstream"], client_ca=certs["client"][0])  # a client certificate is required
    ca = certs["upstream"][0]
    client_cert, client_key = certs["client"]
    check = "health_check: {path: /health, interval_seconds: 0.05, timeout_seconds: 1, unhealthy_threshold: 1}"
    gateway = await start_gateway(f"""
    upstreams:
      mtls: {{targets: ["{target}"], tls: {{ca_file: {ca}, certfile: {client_cert}, keyfile: {client_key}}}, {check}}}
      nocert: {{targets: ["{target}"], tls: {{ca_file: {ca}}}, {check}}}
    routes:
      - {{name: a, path: /a, upstream: mtls}}
    """)
    pools = gateway.holder.runtime.pools
    assert pools["mtls"].ssl_context is gateway.holder.runtime.plans["a"].ssl_context  # built once, used by both
    for _ in range(100):
        if not pools["nocert"].targets[0].healthy:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # a few more rounds
    assert (pools["mtls"].targets[0].healthy, pools["nocert"].targets[0].healthy) == (True, False)
