"""Upstream TLS contexts: one :class:`ssl.SSLContext` per distinct TLS identity, built at load.

SPEC §4: connections to ``https://`` targets are pooled per (origin, trust store,
client certificate); no upstream ever reuses a connection opened under another's
TLS settings. The upstream client keys its idle connections by (origin, context),
so the context object *is* the TLS part of the pool key: two upstreams share a
context, and so their connections, exactly when their ``tls`` sections name the
same trust store and client certificate. Nothing about TLS is looked at per request.

A context's identity is what its files hold, not their names: the same files
under two paths are one identity, and a reload after a certificate was rotated
in place builds a new context (whose connections are pooled apart from the ones
opened under the old certificate), while a reload that changes nothing keeps the
very same context objects, so kept-alive connections survive it.

Certificates are always verified, hostnames always checked: ``ca_file`` is the
trust store (in place of the system's), ``certfile``/``keyfile`` present a
client certificate (mTLS). The proxy path and the active health checks use the same
context for an upstream.
"""

from __future__ import annotations

import functools
import hashlib
import ssl

from ..config import UpstreamTls

__all__ = ["TlsContexts", "tls_identity", "system_context"]


class TlsContexts:
    """Builds and hands out upstream TLS contexts, each distinct identity once.

    ``previous`` (the registry of the runtime being replaced) lends its contexts
    whose identity is unchanged. Raises OSError or ssl.SSLError for unreadable or
    invalid files (a load error).
    """

    def __init__(self, previous: TlsContexts | None = None) -> None:
        self._contexts: dict[bytes, ssl.SSLContext] = {}
        self._inherited = previous._contexts if previous is not None else {}

    def context(self, tls: UpstreamTls | None) -> ssl.SSLContext:
        """The context for an upstream's ``tls`` section (None: the system trust store, no client certificate)."""
        identity = tls_identity(tls)
        context = self._contexts.get(identity) or self._inherited.get(identity)
        if context is None:
            context = _build(tls)
        self._contexts[identity] = context
        return context

    def __len__(self) -> int:
        return len(self._contexts)


@functools.cache
def system_context() -> ssl.SSLContext:
    """The context for an ``https://`` origin that was given none: the system trust store, built once."""
    return ssl.create_default_context()


def tls_identity(tls: UpstreamTls | None) -> bytes:
    """A digest of the trust store and client certificate that ``tls`` names, by the files' contents."""
    digest = hashlib.sha256()
    for role, path in _files(tls):
        digest.update(role)
        if path is None:
            digest.update(b"\0-")
        else:
            with open(path, "rb") as file:
                content = file.read()
            digest.update(b"\0%d\0" % len(content))
            digest.update(content)
    return digest.digest()


def _files(tls: UpstreamTls | None) -> tuple[tuple[bytes, str | None], ...]:
    if tls is None:
        return (b"ca", None), (b"cert", None), (b"key", None)
    client = bool(tls.certfile and tls.keyfile)  # the loader refuses one without the other
    return ((b"ca", tls.ca_file), (b"cert", tls.certfile if client else None),
            (b"key", tls.keyfile if client else None))


def _build(tls: UpstreamTls | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    if tls is not None and tls.certfile and tls.keyfile:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    return context
