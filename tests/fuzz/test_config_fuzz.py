"""Property tests: random YAML documents through ``gateway check``.

In-process for volume: :func:`gateway.cli.main` with ``check -c FILE``, the very
code the command runs, must return 0 (``ok``) or 2 (every problem on its own
line with its location, then the count), never raise. A handful go through the
real CLI in a subprocess: exit 0 or 2, no ``Traceback``.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main
from tests.fuzz.wire import count

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "access_log admin aggregate algorithms allow_credentials allow_headers allow_methods allow_origins attempts "
    "audience auth backoff_seconds balance budget_ratio ca_file cache_size certfile circuit_breaker "
    "claims_to_headers connect_timeout cors drain_seconds expose_headers failure_threshold format "
    "forward_authorization health_check healthy_threshold host interval_seconds issuer jwks_refresh_seconds "
    "jwks_url jwt key keyfile leeway_seconds level logging max_age_seconds max_backoff_seconds max_body_bytes "
    "max_idle_connections max_token_bytes methods name on_statuses open_seconds path port processes "
    "public_key_file rate_limit rate_limit_fail_open rate_limit_store remove replay_buffer_bytes request_headers "
    "request_timeout requests required_claims response_headers retry rewrite_prefix routes scope_claim scopes "
    "secret server set strip_prefix targets timeout timeout_seconds tls trusted_proxies unhealthy_threshold "
    "upstream upstreams validate_json weight url window_seconds"
).split()
TOP_KEYS = ("server", "admin", "auth", "upstreams", "routes", "rate_limit_store", "rate_limit_fail_open", "cors",
            "logging")
SCALAR_WORDS = (
    "HS256", "RS256", "none", "required", "optional", "round_robin", "least_conn", "random", "json", "text",
    "memory", "redis://127.0.0.1:1/0", "http://127.0.0.1:9", "https://x", "ftp://x", "/api", "/api/{id}", "/",
    "header:X-Api-Key", "subject", "ip", "10.0.0.0/8", "::1/128", "300.0.0.0/8", "${GATEWAY_FUZZ_UNSET}",
    "${GATEWAY_FUZZ_UNSET:-3}", "${PATH}", "GET", "get", "TRACE", "X-Api-Key", "bad header", "conf/none.pem",
    "a" * 40, "", "~", "yes", "no", "0x10", "1e3", ".inf", "-1",
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(), st.text(max_size=20),
    st.sampled_from(SCALAR_WORDS), st.sampled_from(KEYS),
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(TOP_KEYS), st.text(max_size=10), st.integers(0, 3),
                 st.booleans(), st.none())


def _values(leaves: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                        max_leaves=25)


documents = st.one_of(
    st.dictionaries(st.sampled_from(TOP_KEYS), _values(scalars), max_size=6),
    st.builds(
        lambda top, upstreams, routes: {**top, "upstreams": upstreams, "routes": routes},
        st.dictionaries(st.sampled_from(TOP_KEYS), _values(scalars), max_size=3),
        st.dictionaries(st.sampled_from(("a", "b", "orders")),
                        st.dictionaries(st.sampled_from(KEYS), _values(scalars), max_size=4), max_size=2),
        st.lists(st.dictionaries(st.sampled_from(KEYS), _values(scalars), max_size=8), max_size=3),
    ),
    _values(scalars),
)
texts = st.one_of(
    documents.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True)),
    st.text(max_size=200),
    st.text(alphabet=":-[]{}&*!|>'\"%@`#,? \n\tab0${}", max_size=120),
    st.tuples(documents.map(lambda doc: yaml.safe_dump(doc)), st.text(max_size=5), st.integers(0, 400)).map(
        lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]),
)
LOCATED = re.compile(r"^\S.*: .+")  # "routes[2].upstream: unknown upstream 'ordrs'" or "FILE:3:1: invalid YAML: ..."


def check_in_process(text: str) -> None:
    count("config loader")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check", "-c", str(path)])
    assert code in (0, 2), (code, out.getvalue(), err.getvalue())
    if code == 0:
        assert out.getvalue() == "ok\n"
        return
    lines = err.getvalue().splitlines()
    assert lines and lines[-1].endswith(f"problem(s) in {path}"), lines
    problems = [line for line in lines[:-1] if not line.startswith((" ", "\t"))]
    assert problems, lines
    assert all(LOCATED.match(line) for line in problems), lines


@given(texts)
def test_check_loads_any_document_or_reports_its_problems(text: str) -> None:
    check_in_process(text)


@settings(max_examples=8)
@given(texts)
def test_the_check_command_exits_0_or_2_without_a_traceback(text: str) -> None:
    count("gateway check CLI")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        done = subprocess.run([sys.executable, str(ROOT / "run.py"), "check", "-c", str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 2), (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


@st.composite
def valid_configs(draw: st.DrawFn) -> list[str]:
    """A valid config as YAML lines in block style (so a line can be duplicated): 1-3 upstreams, 1-4 routes."""
    upstreams = draw(st.lists(st.sampled_from(("orders", "users", "search")), min_size=1, max_size=3, unique=True))
    lines = ["server:", "  host: 127.0.0.1", f"  port: {draw(st.integers(1, 65535))}", "upstreams:"]
    for name in upstreams:
        lines += [f"  {name}:", "    targets:", f"      - http://127.0.0.1:{draw(st.integers(1, 65535))}"]
        if draw(st.booleans()):
            lines += ["    retry:", f"      attempts: {draw(st.integers(1, 5))}"]
    lines.append("routes:")
    for i in range(draw(st.integers(1, 4))):
        lines += [f"  - name: r{i}", f"    path: /p{i}", f"    upstream: {draw(st.sampled_from(upstreams))}"]
        if draw(st.booleans()):
            lines.append(f"    strip_prefix: {draw(st.sampled_from(('true', 'false')))}")
    return lines


@given(valid_configs())
def test_a_valid_config_checks_ok(lines: list[str]) -> None:
    out = run_check("\n".join(lines) + "\n")
    assert out == (0, "ok\n", ""), out


@given(valid_configs(), st.data())
def test_a_duplicate_mapping_key_is_a_config_error(lines: list[str], data: st.DataObject) -> None:
    keyed = [i for i, line in enumerate(lines) if line.rstrip().endswith(":") or ": " in line]
    i = data.draw(st.sampled_from(keyed))
    duplicated = lines[:i + 1] + [lines[i].replace("- ", "  ")] + lines[i + 1:]
    if lines[i].rstrip().endswith(":"):  # a section: repeat it whole, children included
        end = next((j for j in range(i + 1, len(lines)) if _indent(lines[j]) <= _indent(lines[i])), len(lines))
        duplicated = lines[:end] + [lines[i].replace("- ", "  ")] + lines[i + 1:end] + lines[end:]
    code, _, err = run_check("\n".join(duplicated) + "\n")
    assert code == 2, (duplicated, err)


@given(valid_configs())
def test_two_routes_with_one_name_are_a_config_error(lines: list[str]) -> None:
    upstream = lines[lines.index("routes:") + 3].split(": ")[1]
    code, _, err = run_check("\n".join([*lines, "  - name: r0", "    path: /another", f"    upstream: {upstream}"]) + "\n")
    assert code == 2, err


@given(valid_configs())
def test_two_routes_with_one_path_are_a_config_error(lines: list[str]) -> None:
    upstream = lines[lines.index("routes:") + 3].split(": ")[1]
    code, _, err = run_check("\n".join([*lines, "  - name: again", "    path: /p0", f"    upstream: {upstream}"]) + "\n")
    assert code == 2, err


@given(st.sampled_from(("", "\n", "   \n", "# only a comment\n", "---\n", "...\n", "~\n", "null\n")))
def test_an_empty_file_is_a_config_error(text: str) -> None:
    code, _, err = run_check(text)
    assert code == 2, (text, err)


def run_check(text: str) -> tuple[int, str, str]:
    """``gateway check`` in process on ``text``: (exit code, stdout, stderr)."""
    count("config loader")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(text, encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check", "-c", str(path)])
    return code, out.getvalue(), err.getvalue()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" -"))
