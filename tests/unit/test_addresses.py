"""Addresses the gateway is never sent to, however spelled (a security test registered each of these)."""

from __future__ import annotations

import pytest

from rzcp.addresses import ResolverRefusingNoServers, no_server_host, no_server_url

FULL_WIDTH = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in "169.254.169.254")


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "[::ffff:169.254.169.254]",
        "::ffff:a9fe:a9fe",
        "::169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "2852039166",
        "0251.0376.0251.0376",
        "0xa9.0xfe.0xa9.0xfe",
        "169.254.43518",
        FULL_WIDTH,
        "metadata.google.internal",
        "METADATA.google.internal.",
        "fe80::1",
        "224.0.0.1",
        "0.0.0.0",
        "::",
        "fd00:ec2::254",  # AWS's metadata service over IPv6
        "100.100.100.200",  # Alibaba's
        "64:ff9b:1::a9fe:a9fe",  # the local-use NAT64 prefix
    ],
)
def test_no_server_in_any_spelling(host: str) -> None:
    assert no_server_host(host)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "[::ffff:127.0.0.1]", "10.1.2.3", "fhir.ziekenhuis.example", "huisarts-1.nl"]
)
def test_a_members_server(host: str) -> None:
    assert not no_server_host(host)


async def test_a_name_that_resolves_only_to_such_an_address_is_not_connected_to() -> None:
    resolver = ResolverRefusingNoServers()
    try:
        with pytest.raises(OSError, match="never sent to"):
            await resolver.resolve("169.254.169.254", 80)
        assert [entry["host"] for entry in await resolver.resolve("localhost", 80)] == ["127.0.0.1"]
    finally:
        await resolver.close()


def test_a_member_call_to_such_an_address_is_not_made() -> None:
    """An endpoint stored before a rule was added, written as an IP, is refused before each call (the
    resolver sees names only)."""
    assert no_server_url("http://[::ffff:169.254.169.254]/fhir/Condition?patient=Patient/x")
    assert not no_server_url("http://127.0.0.1:8080/fhir/Condition?patient=Patient/x")
