"""IP rules as tables (gateway/policies/iprules.py): parsing, allow/deny semantics, mapped addresses."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.policies.iprules import IpRules, parse_rule


@pytest.mark.parametrize("text, network", [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("10.1.2.3", "10.1.2.3/32"),
    (" 192.168.0.0/16 ", "192.168.0.0/16"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("::1", "::1/128"),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8"),  # IPv4-mapped: the IPv4 network it maps
    ("::ffff:192.168.1.7", "192.168.1.7/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("::/0", "::/0"),
])
def test_parse_rule(text: str, network: str) -> None:
    assert parse_rule(text) == ipaddress.ip_network(network)


@pytest.mark.parametrize("text, message", [
    ("nowhere", "'nowhere' is not an IP address or CIDR"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or CIDR"),
    ("300.1.1.1", "'300.1.1.1' is not an IP address or CIDR"),
    ("", "'' is not an IP address or CIDR"),
    ("10.0.0.1/8", "'10.0.0.1/8' has host bits set: did you mean 10.0.0.0/8?"),
    ("2001:db8::1/32", "'2001:db8::1/32' has host bits set: did you mean 2001:db8::/32?"),
])
def test_parse_rule_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rule(text)
    assert str(caught.value) == message


ALLOW = ("10.0.0.0/8", "192.168.1.7", "2001:db8::/32")
DENY = ("10.0.5.0/24", "2001:db8:bad::/48")


@pytest.mark.parametrize("allow, deny, client, permitted", [
    (ALLOW, (), "10.1.2.3", True),
    (ALLOW, (), "10.255.255.255", True),
    (ALLOW, (), "11.0.0.0", False),
    (ALLOW, (), "9.255.255.255", False),
    (ALLOW, (), "192.168.1.7", True),
    (ALLOW, (), "192.168.1.8", False),
    (ALLOW, (), "2001:db8::1", True),
    (ALLOW, (), "2001:db9::1", False),
    (ALLOW, (), "::ffff:10.1.2.3", True),  # IPv4-mapped IPv6: the IPv4 address
    (ALLOW, (), "::ffff:11.1.2.3", False),
    (ALLOW, (), "::10.1.2.3", False),  # IPv4-compatible (deprecated) is an IPv6 address
    (ALLOW, (), "fe80::1%eth0", False),
    (("fe80::/10",), (), "fe80::1%eth0", True),  # a zone id does not change the address
    (ALLOW, DENY, "10.0.5.9", False),  # deny wins
    (ALLOW, DENY, "10.0.6.9", True),
    (ALLOW, DENY, "::ffff:10.0.5.9", False),
    (ALLOW, DENY, "2001:db8:bad::1", False),
    (ALLOW, DENY, "2001:db8:600d::1", True),
    ((), DENY, "10.0.5.1", False),
    ((), DENY, "8.8.8.8", True),
    ((), DENY, "::1", True),
    ((), ("::ffff:10.0.5.0/120",), "10.0.5.1", False),  # a mapped rule covers the IPv4 spelling too
    (ALLOW, (), "unknown", False),  # not an address: refused by any rule
    ((), DENY, "unknown", False),
    ((), DENY, "", False),
    ((), DENY, "10.0.0.1, 10.0.0.2", False),
    ((), DENY, "10.0.0.1:8080", False),
    (("0.0.0.0/0",), (), "1.2.3.4", True),
    (("0.0.0.0/0",), (), "::1", False),  # an IPv4 rule never matches an IPv6 address
])
def test_permits(allow: tuple[str, ...], deny: tuple[str, ...], client: str, permitted: bool) -> None:
    rules = IpRules(allow, deny)
    assert rules.permits(client) is permitted
    assert rules.permits(client) is permitted  # and again, from the remembered verdict


def test_overlapping_and_adjacent_networks_collapse() -> None:
    rules = IpRules(("10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "10.0.0.0/8"), ())
    assert (rules.permits("10.0.0.0"), rules.permits("10.127.255.255"), rules.permits("10.128.0.0"),
            rules.permits("10.255.255.255"), rules.permits("11.0.0.0")) == (True, True, True, True, False)


def test_many_networks_are_searched_not_scanned() -> None:
    allow = tuple(f"10.{i}.{j}.0/24" for i in range(0, 40, 2) for j in range(256))  # 5120 networks
    rules = IpRules(allow, ())
    assert rules.permits("10.38.255.1") and not rules.permits("10.39.0.1") and rules.permits("10.0.0.1")


def test_remembered_verdicts_are_bounded() -> None:
    rules = IpRules((), ("10.0.0.0/8",))
    for i in range(12000):
        rules.permits(f"192.168.{i // 256}.{i % 256}")
    assert len(rules._verdicts) == 10000
    assert rules.permits("10.9.9.9") is False


@pytest.mark.parametrize("client", ["010.0.0.1", "10.0.1", "10.0.0.1 ", " 10.0.0.1", "10.0.0.1\x00", "1e1.0.0.1",
                                    "::ffff:10.0.0.1%", "::ffff:010.0.0.1", "[::1]", "0x0a000001"])
def test_spellings_that_are_not_an_address_are_refused(client: str) -> None:
    assert IpRules(("10.0.0.0/8", "::/0"), ()).permits(client) is False
    assert IpRules((), ("192.0.2.0/24",)).permits(client) is False
