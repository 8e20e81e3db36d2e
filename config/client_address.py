"""The client's address, the one answer for throttles, lockout and audit events.

Behind a reverse proxy ``REMOTE_ADDR`` is the proxy, so every merchant would
share one throttle and one lockout. ``X-Forwarded-For`` is only believed when
the connection comes from an address in ``settings.TRUSTED_PROXIES``
(addresses or CIDR networks): then the trusted hops are peeled off the right
of the chain and the first untrusted one is the client. With no trusted
proxies (the default) the header is ignored, so a client cannot pick its own
address by sending it. django-ipware parses the header and picks the hop.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest
from ipware import get_client_ip
from python_ipware.modern.parsers import parse_ip, split_proxy_chain

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address, networks: tuple[_Network, ...]) -> bool:
    return any(address in network for network in networks)


def client_address(request: HttpRequest) -> str | None:
    """Return the client's IP address, or None when there is no valid one.

    None (never a placeholder such as "unknown") because audit events and
    django-axes store it in an IP address column.
    """
    remote = parse_ip(request.META.get("REMOTE_ADDR") or "")
    if remote is None:
        return None
    networks = _networks(tuple(settings.TRUSTED_PROXIES))
    if not _trusted(remote, networks):
        return str(remote)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR") or ""
    chain = [*(split_proxy_chain(forwarded) or []), remote]
    # Hops appended by trusted proxies; the last one is the proxy itself.
    hops = 0
    while hops < len(chain) - 1 and _trusted(chain[-1 - hops], networks):
        hops += 1
    client, _routable = get_client_ip(
        _Meta({"HTTP_X_FORWARDED_FOR": ", ".join(str(ip) for ip in chain)}),
        proxy_order="left-most",
        proxy_count=hops,
        request_header_order=["HTTP_X_FORWARDED_FOR"],
        strict=False,
    )
    return client or str(remote)


class _Meta:
    """The one attribute of a request that django-ipware reads."""

    def __init__(self, meta: dict[str, str]):
        self.META = meta
