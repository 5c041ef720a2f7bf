"""Addresses the gateway is never sent to: link-local (a cloud's metadata service answers at
169.254.169.254), multicast and unspecified ones, however they are spelled.

Checked when an endpoint is registered (`no_server_host`, on the URL's host), before each member call
(`no_server_url`: an address stored before a rule was added), and when the outgoing client resolves a
member's host name (`ResolverRefusingNoServers`), since a name can point anywhere later.
A security test registered `[::ffff:169.254.169.254]`, `[64:ff9b::a9fe:a9fe]`, `2852039166`,
`0xa9.0xfe.0xa9.0xfe`, full-width digits and `metadata.google.internal`, all let through before.
"""

from __future__ import annotations

import socket
import unicodedata
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

#: Names of cloud metadata services that are no IP address.
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
#: Metadata services outside link-local: AWS's over IPv6, Alibaba's (a review).
_METADATA_ADDRESSES = frozenset({ip_address("fd00:ec2::254"), ip_address("100.100.100.200")})
#: NAT64 prefixes that carry an IPv4 address in their last 32 bits: the well-known and the local-use one.
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))


def no_server(address: IPv4Address | IPv6Address) -> bool:
    """Whether the address, or the IPv4 address an IPv6 one carries, is link-local, multicast,
    unspecified or a metadata service's."""
    if isinstance(address, IPv6Address) and (carried := _carried_ipv4(address)) is not None:
        address = carried
    return (
        address in _METADATA_ADDRESSES
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
    )


def _carried_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _NAT64) or (address.packed[:12] == bytes(12) and int(address) > 1):
        return IPv4Address(address.packed[12:])
    return None


def no_server_host(host: str) -> bool:
    """Whether a URL's host names an address the gateway is never sent to: after NFKC (a client connects
    to an address written in full-width digits as to the ASCII one), as an IP address in any spelling the
    C library accepts (`2852039166`, octal, hex, `169.254.43518`), or as a metadata service's name."""
    name = unicodedata.normalize("NFKC", host).lower().rstrip(".")
    if name in _METADATA_NAMES:
        return True
    try:
        return no_server(ip_address(name.strip("[]")))
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(name)  # the legacy IPv4 spellings some clients still connect to
    except OSError:
        return False
    return no_server(IPv4Address(packed))


@lru_cache(maxsize=4096)
def _no_server_host_cached(host: str) -> bool:
    return no_server_host(host)


def no_server_url(url: str) -> bool:
    """`no_server_host` for a URL the gateway is about to call (hosts remembered: it runs per member call)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False  # the client refuses it with its own error
    return bool(host) and _no_server_host_cached(host)


class ResolverRefusingNoServers(AbstractResolver):
    """aiohttp's resolver without the addresses the gateway is never sent to: a member's host name that
    resolves only to those fails its calls as a connection failure would."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> Any:
        found = await self._inner.resolve(host, port, family)
        kept = [entry for entry in found if not no_server(ip_address(entry["host"].split("%", 1)[0]))]
        if not kept:
            raise OSError(f"{host} resolves only to addresses the gateway is never sent to")
        return kept

    async def close(self) -> None:
        await self._inner.close()
