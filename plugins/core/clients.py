"""Who is the client: the address a login limit counts.

``X-Forwarded-For`` is written by whoever sends the request, so it is believed only
when the TCP peer is a proxy the operator listed (``COREC_TRUSTED_PROXIES``); then
the client is the right-most address in it that is not itself a trusted proxy, the
one the outermost trusted proxy saw. Everything left of that is the client's own
claim and never counts. With no trusted proxies (the default) the header is ignored:
rotating it used to buy a fresh login allowance per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from corec_tasks.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Hops read from the right of ``X-Forwarded-For``: no chain of proxies is this long.
MAX_HOPS = 32


def parse_ip(text: str) -> IPAddress | None:
    """``text`` as an address (an IPv4-mapped IPv6 address as IPv4), else None."""
    try:
        ip = ipaddress.ip_address(text.strip(" \t"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress | None, proxies: Sequence[IPNetwork]) -> bool:
    return ip is not None and any(ip in net for net in proxies)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[IPNetwork]
) -> str:
    """The client's address: ``peer`` (the TCP peer), or, when ``peer`` is a trusted
    proxy, the right-most ``X-Forwarded-For`` hop that is not (every header line, in
    order). A hop that is not an address stops the walk at the proxy that wrote it, so
    a garbled header never lets the client choose its own key."""
    ip = parse_ip(peer) if peer else None
    if not _trusted(ip, proxies):
        return str(ip) if ip is not None else (peer or "unknown")
    assert ip is not None
    hops = [hop for line in forwarded_for for hop in line.split(",")]
    for hop in reversed(hops[-MAX_HOPS:]):
        found = parse_ip(hop)
        if found is None:
            break
        ip = found
        if not _trusted(ip, proxies):
            break
    return str(ip)


def may_read_metrics(client: str, readers: Sequence[IPNetwork]) -> bool:
    """True when ``client`` (as ``client_address`` gives it) is loopback or in
    ``readers``: the API's ``/metrics`` is for the host's own scraper unless the
    operator names others. Behind a proxy on the same host, list the proxy in
    ``COREC_TRUSTED_PROXIES``, or every proxied request would look like loopback."""
    ip = parse_ip(client)
    return ip is not None and (ip.is_loopback or any(ip in net for net in readers))
