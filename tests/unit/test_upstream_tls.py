"""Upstream TLS contexts (gateway.upstream.tls): one per distinct trust store and client certificate."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from gateway.config import UpstreamTls
from gateway.upstream.tls import TlsContexts, system_context, tls_identity
from tests.support.certs import self_signed


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Two CAs, a client certificate and key, and a copy of the first CA under another name."""
    ca_a, _ = self_signed(tmp_path, "ca-a")
    ca_b, _ = self_signed(tmp_path, "ca-b")
    cert, key = self_signed(tmp_path, "client")
    copy = str(tmp_path / "elsewhere.crt")
    shutil.copyfile(ca_a, copy)
    return {"ca_a": ca_a, "ca_b": ca_b, "cert": cert, "key": key, "ca_a_copy": copy}


def settings(files: dict[str, str], spec: str | None) -> UpstreamTls | None:
    """``None``, ``""`` (an empty tls section) or ``"ca_a+cert"``-like names of ``files``."""
    if spec is None:
        return None
    names = spec.split("+") if spec else []
    return UpstreamTls(
        ca_file=next((files[n] for n in names if n.startswith("ca_")), None),
        certfile=files["cert"] if "cert" in names else None,
        keyfile=files["key"] if "cert" in names else None,
    )


@pytest.mark.parametrize(("one", "other", "same"), [
    (None, None, True),
    (None, "", True),                       # an empty tls section is the system trust store too
    ("ca_a", "ca_a", True),
    ("ca_a", "ca_a_copy", True),            # the same trust store under another path
    ("ca_a", "ca_b", False),
    ("ca_a", None, False),
    ("ca_a+cert", "ca_a", False),           # a client certificate is part of the identity
    ("ca_a+cert", "ca_a_copy+cert", True),
    ("ca_a+cert", "ca_b+cert", False),
    ("cert", None, False),
])
def test_one_context_per_distinct_identity(files: dict[str, str], one: str | None, other: str | None,
                                           same: bool) -> None:
    contexts = TlsContexts()
    first, second = contexts.context(settings(files, one)), contexts.context(settings(files, other))
    assert (first is second) is same
    assert (tls_identity(settings(files, one)) == tls_identity(settings(files, other))) is same
    assert len(contexts) == (1 if same else 2)


def test_contexts_verify_and_present_the_client_certificate(files: dict[str, str]) -> None:
    context = TlsContexts().context(settings(files, "ca_a+cert"))
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "ca-a"),),)]


def test_a_reload_keeps_unchanged_contexts_and_rebuilds_rotated_ones(files: dict[str, str]) -> None:
    before = TlsContexts()
    kept, rotated = before.context(settings(files, "ca_b")), before.context(settings(files, "ca_a+cert"))
    shutil.copyfile(files["ca_b"], files["ca_a"])  # ca_a's file now holds another certificate
    after = TlsContexts(before)
    assert after.context(settings(files, "ca_b")) is kept
    assert after.context(settings(files, "ca_a+cert")) is not rotated


def test_the_system_context_is_built_once() -> None:
    assert system_context() is system_context()
    assert system_context().verify_mode == ssl.CERT_REQUIRED


def test_an_unreadable_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        TlsContexts().context(UpstreamTls(ca_file=str(tmp_path / "missing.crt")))
