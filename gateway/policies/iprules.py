"""IP rules: a route's ``ip_allow`` / ``ip_deny`` CIDR lists, compiled at load, checked per request.

The address checked is the client's as the route step worked it out
(``request.client_ip``: the peer, or the right-most untrusted ``X-Forwarded-For``
entry when the peer is one of ``server.trusted_proxies``), so a client that is not
behind a trusted proxy cannot choose it by sending ``X-Forwarded-For``.

Semantics (as Kong's ``ip-restriction``): with ``ip_allow`` only the listed
networks get in; with ``ip_deny`` everyone but the listed networks does; with
both, an address must be in an allow network and in no deny network (deny wins,
so ``ip_allow: [10.0.0.0/8]`` with ``ip_deny: [10.0.5.0/24]`` carves a hole). A
refused request is 403 ``forbidden``. An IPv4-mapped IPv6 address
(``::ffff:10.1.2.3``, what a dual-stack socket or a proxy may report) is the IPv4
address it maps, and a ``::ffff:a.b.c.d/N`` rule (N >= 96) is the IPv4 network it
maps, so one rule covers both spellings. A client address that is not an IP
address at all (only a trusted proxy can send one) matches nothing and is
refused by any rule: an address that cannot be read cannot be shown to be
outside a deny list either.

Compiled form: each list is collapsed into sorted, non-overlapping integer ranges
per IP version and searched with :func:`bisect.bisect_right`, so a request costs
one address parse (:func:`socket.inet_pton`, in C) and one binary search however
long the lists; verdicts are remembered per address string (bounded).

A CORS preflight is answered by the CORS step, which runs before this step's
slot in :data:`gateway.policies.ORDER` and ends the chain; so a route with both
CORS and IP rules also gets a :class:`PreflightIpRulesStep` ahead of CORS, which
checks preflights only: a refused address gets a 403, never a preflight answer.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Iterable

from ..errors import Forbidden
from . import Request, Step

__all__ = ["IpRules", "IpRulesStep", "PreflightIpRulesStep", "parse_rule"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_SIZE = 10000
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, RFC 4291 §2.5.5.2


def parse_rule(text: str) -> Network:
    """A CIDR (``10.0.0.0/8``, ``2001:db8::/32``) or a single address (a /32 or /128).

    Raises ValueError, saying why, for anything else, including host bits set
    (``10.0.0.1/8``: probably a typo; the message names the network it would mean).
    An IPv4-mapped IPv6 network is returned as the IPv4 network it maps.
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address or CIDR") from None
    if str(network.network_address) != str(ipaddress.ip_interface(text.strip()).ip):
        raise ValueError(f"'{text}' has host bits set: did you mean {network}?")
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


class _Ranges:
    """Networks as sorted, merged (start, end) integer ranges per IP version."""

    __slots__ = ("starts", "ends")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.starts: dict[int, list[int]] = {4: [], 6: []}
        self.ends: dict[int, list[int]] = {4: [], 6: []}
        by_version: dict[int, list[Network]] = {4: [], 6: []}
        for network in networks:
            by_version[network.version].append(network)
        for version, nets in by_version.items():
            for net in ipaddress.collapse_addresses(nets):  # type: ignore[type-var]  # one version per list
                self.starts[version].append(int(net.network_address))
                self.ends[version].append(int(net.broadcast_address))

    def holds(self, version: int, number: int) -> bool:
        """Whether the address ``number`` of IP ``version`` is in one of the ranges."""
        i = bisect_right(self.starts[version], number) - 1
        return i >= 0 and number <= self.ends[version][i]


class IpRules:
    """One route's allow and deny lists, compiled. ``allow`` empty: everyone not denied."""

    def __init__(self, allow: Iterable[str], deny: Iterable[str]) -> None:
        allow_nets = [parse_rule(rule) for rule in allow]
        self._has_allow = bool(allow_nets)
        self._allow = _Ranges(allow_nets)
        self._deny = _Ranges(parse_rule(rule) for rule in deny)
        self._verdicts: dict[str, bool] = {}

    def permits(self, client_ip: str) -> bool:
        """Whether ``client_ip`` (an address string) may use the route."""
        verdict = self._verdicts.get(client_ip)
        if verdict is None:
            verdict = self._decide(client_ip)
            if len(self._verdicts) < _CACHE_SIZE:
                self._verdicts[client_ip] = verdict
        return verdict

    def _decide(self, client_ip: str) -> bool:
        try:
            if ":" in client_ip:
                address, percent, zone = client_ip.partition("%")  # a zone id (fe80::1%eth0): the same address
                if percent and not zone:
                    return False
                packed = socket.inet_pton(socket.AF_INET6, address)
                if packed[:12] == _MAPPED_PREFIX:
                    version, number = 4, int.from_bytes(packed[12:], "big")
                else:
                    version, number = 6, int.from_bytes(packed, "big")
            else:
                version, number = 4, int.from_bytes(socket.inet_pton(socket.AF_INET, client_ip), "big")
        except (OSError, ValueError):  # inet_pton: OSError for a malformed address, ValueError for a NUL
            return False  # not an address: matches no rule, refused by every rule
        if self._has_allow and not self._allow.holds(version, number):
            return False
        return not self._deny.holds(version, number)


class IpRulesStep(Step):
    """Refuse a client whose address the route's rules do not let in (403 ``forbidden``)."""

    name = "ip_rules"

    def __init__(self, rules: IpRules) -> None:
        self.permits = rules.permits

    def on_request(self, request: Request) -> None:
        """Raises Forbidden."""
        if not self.permits(request.client_ip):
            raise Forbidden()
        return None


class PreflightIpRulesStep(Step):
    """The route's IP rules for CORS preflights only, run ahead of the CORS step that answers them."""

    name = "ip_rules"

    def __init__(self, rules: IpRules) -> None:
        self.permits = rules.permits

    def on_request(self, request: Request) -> None:
        """Raises Forbidden for a preflight from a refused address; anything else goes on."""
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.incoming \
                and not self.permits(request.client_ip):
            raise Forbidden()
        return None
