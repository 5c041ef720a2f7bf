"""What one gateway process holds for the exchange: the consent policy and compiled-consent cache, the
member directory, the locator, the adapters (one shared HTTP client over aiohttp, per-member breakers) and
the resource types a pull may ask for. Built once in `create_app` (sharing the runtime's policy and
consent cache), closed in the lifespan.

Nothing in it decides alone: members, locations, consents and outbox claims all live in the database; the
breakers are a per-process health heuristic (rzcp.exchange.breaker), and the members' recent answer times
only order a pull's calls (rzcp.exchange.pace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from rzcp.consent.cache import ConsentCache
from rzcp.consent.policy import Policy, load_policy
from rzcp.exchange.adapters import AdapterContext, AdapterRegistry
from rzcp.exchange.breaker import BreakerBoard
from rzcp.exchange.directory import Directory
from rzcp.exchange.gates import MemberGates
from rzcp.exchange.http import build_http_client
from rzcp.exchange.locator import Locator
from rzcp.exchange.pace import MemberPace
from rzcp.exchange.secrets import BsnProtector, member_secret_box
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.settings import Settings


def covered_types(policy: Policy, search: SearchRegistry) -> tuple[str, ...]:
    """The resource types the policy's data categories cover that can be searched by patient, in the
    policy's order."""
    seen: list[str] = []
    for category in policy.document.data_categories:
        for cover in category.covers:
            res_type = cover.resource
            if res_type in seen:
                continue
            if search.get(res_type, "patient") is None and search.get(res_type, "subject") is None:
                continue
            seen.append(res_type)
    return tuple(seen)


@dataclass
class Exchange:
    settings: Settings
    policy: Policy
    consent_cache: ConsentCache
    directory: Directory
    locator: Locator
    adapters: AdapterRegistry
    search: SearchRegistry
    pull_types: tuple[str, ...]
    http: httpx.AsyncClient
    #: Each member's recent answer time in this process: the order of a pull's calls (slowest first).
    pace: MemberPace = field(default_factory=MemberPace)
    #: How many pulls this process has under way at each member (RZCP_MEMBER_MAX_PULLS).
    gates: MemberGates = field(default_factory=MemberGates)
    _owns_http: bool = field(default=True, repr=False)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        search: SearchRegistry,
        *,
        policy: Policy | None = None,
        consent_cache: ConsentCache | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        breakers: BreakerBoard | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> Exchange:
        """`http` is the process's one client (the gateway's runtime owns and closes it); without it the
        exchange builds and owns its own, for tests and tools that run an exchange alone."""
        policy = policy or load_policy(settings.consent_policy_path)
        owns_http = http is None
        http = http or build_http_client(transport)
        context = AdapterContext(http=http, breakers=breakers or BreakerBoard())
        return cls(
            settings=settings,
            policy=policy,
            consent_cache=consent_cache or ConsentCache(max_patients=settings.consent_cache_patients),
            directory=Directory(member_secret_box(settings.secret_key), settings.member_timeout),
            locator=Locator(BsnProtector(settings.bsn_secret)),
            adapters=AdapterRegistry(context),
            search=search,
            pull_types=covered_types(policy, search),
            http=http,
            gates=MemberGates(settings.member_max_pulls),
            _owns_http=owns_http,
        )

    @property
    def breakers(self) -> BreakerBoard:
        return self.adapters.context.breakers

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.adapters.aclose()
        if self._owns_http:
            await self.http.aclose()
