"""The client a login limit counts (plugins.core.clients): X-Forwarded-For only from a
trusted proxy, and then only the right-most hop no trusted proxy wrote."""

from __future__ import annotations

import ipaddress

from plugins.core.clients import client_address

NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.1/32"))


def test_no_trusted_proxy_means_the_peer_whatever_the_header() -> None:
    assert client_address("203.0.113.9", ["1.2.3.4"], ()) == "203.0.113.9"
    assert client_address("127.0.0.1", ["1.2.3.4"], ()) == "127.0.0.1"
    # A peer that is not a trusted proxy is the client, even when proxies are listed.
    assert client_address("203.0.113.9", ["1.2.3.4"], NETS) == "203.0.113.9"


def test_a_trusted_peer_gives_the_right_most_untrusted_hop() -> None:
    assert client_address("192.0.2.1", ["198.51.100.7"], NETS) == "198.51.100.7"
    # What the client wrote itself (left of what the proxy appended) never counts.
    assert client_address("192.0.2.1", ["6.6.6.6, 198.51.100.7"], NETS) == "198.51.100.7"
    assert client_address("192.0.2.1", ["6.6.6.6", "198.51.100.7"], NETS) == "198.51.100.7"
    # A chain of trusted proxies is walked through.
    assert client_address("192.0.2.1", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], NETS) == (
        "198.51.100.7"
    )
    # Every hop trusted: the left-most.
    assert client_address("192.0.2.1", ["10.9.9.9, 10.1.2.3"], NETS) == "10.9.9.9"


def test_no_header_or_a_garbled_hop_stops_at_the_trusted_proxy() -> None:
    assert client_address("192.0.2.1", [], NETS) == "192.0.2.1"
    assert client_address("192.0.2.1", ["6.6.6.6, not-an-ip"], NETS) == "192.0.2.1"
    assert client_address("192.0.2.1", ["6.6.6.6, 10.1.2.3, unknown"], NETS) == "192.0.2.1"
    assert client_address("192.0.2.1", ["1.2.3.4:5678"], NETS) == "192.0.2.1"
    assert client_address("192.0.2.1", ["6.6.6.6, not-an-ip, 10.1.2.3"], NETS) == "10.1.2.3"


def test_addresses_are_normalised() -> None:
    # An IPv4-mapped IPv6 peer (a dual-stack listener) is the IPv4 address it maps.
    assert client_address("::ffff:192.0.2.1", ["198.51.100.7"], NETS) == "198.51.100.7"
    assert client_address("::ffff:203.0.113.9", [], ()) == "203.0.113.9"
    # One IPv6 address spelled two ways is one client.
    assert client_address("192.0.2.1", ["2001:DB8:0:0::1"], NETS) == "2001:db8::1"
    assert client_address(None, [], NETS) == "unknown"
    assert client_address("testclient", ["1.2.3.4"], NETS) == "testclient"


def test_metrics_readers_are_loopback_and_the_listed_ones() -> None:
    from plugins.core.clients import may_read_metrics

    listed = (ipaddress.ip_network("10.0.0.0/8"),)
    for client in ("127.0.0.1", "127.8.9.10", "::1"):
        assert may_read_metrics(client, ())
    for client in ("192.0.2.1", "10.1.1.1", "testclient", "unknown", "0.0.0.0"):
        assert not may_read_metrics(client, ())
    assert may_read_metrics("10.1.1.1", listed) and not may_read_metrics("11.0.0.1", listed)
