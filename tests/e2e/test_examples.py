"""conf/examples/: every file there passes `gateway check` and the config's JSON Schema.

The files are globbed, so an example added later is covered without touching this test.
The rule for an example: it checks with only the environment below set (the keys and
certificates it needs, generated here into the test's tmp dir, and the secrets it
refuses to default); everything else has a default in the file. Each one starts with
the editor line and a comment saying what it shows and how to run it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.schema import config_schema
from gateway.yamldoc import Problems, substitute
from tests.conftest import Fetch
from tests.support.certs import self_signed
from tests.support.gateway_process import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "conf" / "examples").glob("*.yaml"))
GATEWAY = str(Path(sys.executable).parent / "gateway")
VALIDATOR = jsonschema.Draft202012Validator(config_schema())
# The features the examples must cover (SPEC §2-§9 as built); other files may be added freely.
REQUIRED = {"jwt-jwks.yaml", "jwt-rs256-pem.yaml", "tls-termination.yaml", "upstream-mtls.yaml",
            "ratelimit-redis.yaml", "processes.yaml", "aggregation.yaml", "plugins.yaml", "admin-dashboard.yaml"}


@pytest.fixture(scope="module")
def environ(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the examples read from the environment that they do not default: keys, certificates, secrets."""
    directory = tmp_path_factory.mktemp("example-keys")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = directory / "jwt-public.pem"
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    server_cert, server_key = self_signed(directory, "server")
    ca_cert, _ = self_signed(directory, "upstream-ca")
    client_cert, client_key = self_signed(directory, "gateway-client")
    return {
        "GATEWAY_JWT_PUBLIC_KEY": str(public),
        "GATEWAY_TLS_CERT": server_cert, "GATEWAY_TLS_KEY": server_key,
        "GATEWAY_UPSTREAM_CA": ca_cert, "GATEWAY_CLIENT_CERT": client_cert, "GATEWAY_CLIENT_KEY": client_key,
        "GATEWAY_ADMIN_TOKEN": "e" * 64,
    }


def test_every_feature_has_an_example() -> None:
    assert REQUIRED <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_gateway_check(path: Path, environ: dict[str, str]) -> None:
    env = {"PATH": str(Path(sys.executable).parent), **environ}
    done = subprocess.run([GATEWAY, "check", "-c", str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates_against_the_schema_and_is_commented(path: Path, environ: dict[str, str]) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# yaml-language-server: $schema=../gateway.schema.json"
    assert lines[1].startswith("# ") and len(lines[1]) > 20  # says what it shows
    as_written = yaml.safe_load(text)
    assert [e.message for e in VALIDATOR.iter_errors(as_written)] == []
    problems = Problems()  # and once the references are replaced
    substituted = substitute(as_written, "", environ, problems)
    assert problems == []
    assert [e.message for e in VALIDATOR.iter_errors(substituted)] == []


@pytest.mark.parametrize("unset, problem", [
    ("GATEWAY_ADMIN_TOKEN", "admin.token: environment variable GATEWAY_ADMIN_TOKEN is not set"),
])
def test_an_example_without_its_secret_is_refused(environ: dict[str, str], unset: str, problem: str) -> None:
    env = {"PATH": str(Path(sys.executable).parent), **{k: v for k, v in environ.items() if k != unset}}
    done = subprocess.run([GATEWAY, "check", "-c", "conf/examples/admin-dashboard.yaml"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[0] == problem


async def test_the_tls_example_serves_https(environ: dict[str, str], start_upstream: Any, http: Fetch) -> None:
    """Runnable as written: the TLS example, served, answers over HTTPS with the given certificate."""
    from tornado.web import Application, RequestHandler

    class Echo(RequestHandler):
        def get(self) -> None:
            self.finish(f"{self.request.path} {self.request.headers.get('X-Forwarded-Proto')}")

    upstream = start_upstream(Application([(r".*", Echo)]))
    process = GatewayProcess(ROOT / "conf" / "examples" / "tls-termination.yaml", env={
        **environ, "GATEWAY_PORT": "0", "GATEWAY_ADMIN_PORT": "0", "WEB_URL": upstream.url})
    await process.start()
    try:
        answer = await http(f"https://127.0.0.1:{process.port}/public/x", ca_certs=environ["GATEWAY_TLS_CERT"])
        assert (answer.code, answer.body) == (200, b"/public/x https")
        assert (await process.stop()) == 0
    finally:
        process.kill()
