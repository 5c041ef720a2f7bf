"""The adapter protocol: discovery through entry points, the registry, and the descriptors' checks."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from rzcp.exchange.adapters import (
    ENTRY_POINT_GROUP,
    AdapterContext,
    AdapterRegistry,
    AuthKind,
    Capabilities,
    DeliveryOutcome,
    Member,
    MemberAdapter,
    MemberAuth,
    ReadOutcome,
    SearchOutcome,
    SearchQuery,
    UnknownAdapter,
    discover,
)


def test_the_fhir_rest_adapter_is_found_through_its_entry_point() -> None:
    found = discover()
    assert "fhir-rest" in found
    assert found["fhir-rest"].group == ENTRY_POINT_GROUP
    assert found["fhir-rest"].value == "rzcp_fhir_rest:create"


def test_the_exchange_core_never_imports_an_adapter_by_name() -> None:
    from pathlib import Path

    import rzcp

    core = Path(rzcp.__file__).parent
    imports = re.compile(r"^\s*(from|import)\s+rzcp_fhir_rest\b", re.M)
    offenders = [str(p) for p in core.rglob("*.py") if imports.search(p.read_text())]
    assert offenders == []


class _Echo(MemberAdapter):
    name = "echo"

    async def search(self, member: Member, query: SearchQuery) -> SearchOutcome:
        return SearchOutcome(member.ura, [{"resourceType": query.resource_type, "id": "1"}])

    async def read(self, member: Member, res_type: str, res_id: str, *, patient: str | None = None) -> Any:
        return ReadOutcome(member.ura, "found", {"resourceType": res_type, "id": res_id})  # type: ignore[arg-type]

    async def deliver(self, member: Member, message: Any, *, idempotency_key: str) -> DeliveryOutcome:
        raise NotImplementedError

    async def capabilities(self, member: Member) -> Capabilities:
        return Capabilities(member.ura, True)


async def test_registry_builds_each_adapter_once_and_names_unknown_ones() -> None:
    built: list[AdapterContext] = []

    def factory(context: AdapterContext) -> MemberAdapter:
        built.append(context)
        return _Echo()

    async with httpx.AsyncClient() as http:
        registry = AdapterRegistry(AdapterContext(http), available={"echo": factory})
        member = Member("1", "Echo", "Z3", "http://127.0.0.1:1/fhir", adapter="echo")
        assert registry.for_member(member) is registry.get("echo")
        assert len(built) == 1
        outcome = await registry.for_member(member).search(member, SearchQuery("Observation", "p"))
        assert outcome.resources == [{"resourceType": "Observation", "id": "1"}]
        with pytest.raises(UnknownAdapter, match=r"no adapter 'hl7v2'.*installed: echo"):
            registry.get("hl7v2")


async def test_registry_refuses_a_factory_that_does_not_give_an_adapter() -> None:
    async with httpx.AsyncClient() as http:
        registry = AdapterRegistry(AdapterContext(http), available={"bad": lambda _ctx: object()})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="does not implement"):
            registry.get("bad")


def test_an_adapter_must_implement_every_hook() -> None:
    class Half(MemberAdapter):
        name = "half"

        async def search(self, member: Member, query: SearchQuery) -> SearchOutcome:
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def test_member_descriptors_are_checked() -> None:
    member = Member("1", "GP", "Z3", "http://127.0.0.1:9/fhir/")
    assert member.base_url == "http://127.0.0.1:9/fhir"
    with pytest.raises(ValueError, match="not http"):
        Member("1", "GP", "Z3", "ftp://x/fhir")
    with pytest.raises(ValueError, match="timeout"):
        Member("1", "GP", "Z3", "http://x/fhir", timeout=0)
    with pytest.raises(ValueError, match="needs a token"):
        MemberAuth(AuthKind.BEARER)
    with pytest.raises(ValueError, match="token_url"):
        MemberAuth(AuthKind.SMART, client_id="c")
    secret = MemberAuth(AuthKind.BEARER, token="very-secret")
    assert "very-secret" not in repr(secret) and "very-secret" not in repr(
        Member("1", "n", "c", "http://x", auth=secret)
    )
