"""The auth domain without HTTP: scopes, the BSN check, the request context, key rotation."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

from rzcp.auth.bsn import is_valid_bsn
from rzcp.auth.context import parse_context
from rzcp.auth.keys import KeyRing
from rzcp.auth.principal import Principal
from rzcp.auth.registry import check_jwks
from rzcp.auth.scopes import ScopeError, ScopeSet, allows, parse_scope
from rzcp.auth.tokens import InvalidToken, TokenService
from rzcp.errors import BadRequest, Forbidden


@pytest.mark.parametrize(
    ("scope", "resource_type", "interaction", "expected"),
    [
        ("system/Patient.read", "Patient", "read", True),
        ("system/Patient.read", "Patient", "search-type", True),
        ("system/Patient.read", "Patient", "create", False),
        ("system/Patient.read", "Observation", "read", False),
        ("system/*.write", "Observation", "update", True),
        ("system/*.write", "Observation", "read", False),
        ("system/*.*", "Consent", "delete", True),
        ("system/Observation.rs", "Observation", "search-type", True),
        ("system/Observation.rs", "Observation", "history-instance", True),
        ("system/Observation.r", "Observation", "search-type", False),
        ("patient/Consent.cruds", "Consent", "update", True),
        ("system/*.cud", "Patient", "vread", False),
    ],
)
def test_allows(scope: str, resource_type: str, interaction: str, expected: bool) -> None:
    assert allows(ScopeSet.parse(scope), resource_type, interaction) is expected


def test_allows_checks_the_context() -> None:
    scopes = ScopeSet.parse("patient/Patient.rs")
    assert allows(scopes, "Patient", "read", context="patient")
    assert not allows(scopes, "Patient", "read", context="system")


@pytest.mark.parametrize(
    "bad",
    ["system/Patient", "system/Patient.rw", "system/Patient.sr", "robot/Patient.read", "system/patient.read"],
)
def test_bad_scopes(bad: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(bad)


def test_narrowing() -> None:
    registered = ScopeSet.parse("system/Patient.rs system/Observation.read")
    assert str(registered.narrow(ScopeSet.parse("system/Patient.read"))) == "system/Patient.read"
    narrowed = registered.narrow(ScopeSet.parse("system/*.cruds"))
    assert {str(s) for s in narrowed.resource} == {"system/Patient.rs", "system/Observation.rs"}
    assert not registered.narrow(ScopeSet.parse("system/Consent.read")).resource
    assert not registered.narrow(ScopeSet.parse("patient/Patient.read")).resource


@pytest.mark.parametrize(
    ("bsn", "valid"),
    [
        ("999911120", True),
        ("111222333", True),
        ("123456789", False),
        ("000000000", False),
        ("99991112", False),
        ("abcdefghi", False),
    ],
)
def test_bsn_eleven_check(bsn: str, valid: bool) -> None:
    assert is_valid_bsn(bsn) is valid


def test_context() -> None:
    allowed = frozenset({"TREAT", "COC"})
    ctx = parse_context({}, allowed=allowed, break_glass_enabled=False)
    assert ctx.purpose_of_use == "TREAT" and ctx.acting_practitioner is None
    ctx = parse_context(
        {
            "x-purpose-of-use": "COC",
            "x-acting-practitioner": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|1",
        },
        allowed=allowed,
        break_glass_enabled=False,
    )
    assert str(ctx.acting_practitioner) == "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|1"
    # blanks around the bar are not part of the identifier; a value too long is said to be too long
    spaced = {"x-acting-practitioner": " http://fhir.nl/fhir/NamingSystem/uzi-nr-pers | 900012345 "}
    ctx = parse_context(spaced, allowed=allowed, break_glass_enabled=False)
    assert str(ctx.acting_practitioner) == "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900012345"
    long = {"x-acting-practitioner": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|" + "9" * 5000}
    with pytest.raises(BadRequest, match="longer than 512 characters"):
        parse_context(long, allowed=allowed, break_glass_enabled=False)
    glass = {"x-purpose-of-use": "ETREAT", "x-break-glass-reason": "unconscious"}
    with pytest.raises(Forbidden):
        parse_context(glass, allowed=allowed, break_glass_enabled=False)
    with pytest.raises(BadRequest):
        parse_context({"x-purpose-of-use": "ETREAT"}, allowed=allowed, break_glass_enabled=True)
    ctx = parse_context(glass, allowed=allowed, break_glass_enabled=True)
    assert ctx.break_glass and ctx.break_glass_reason == "unconscious"
    with pytest.raises(BadRequest):
        parse_context({"x-break-glass-reason": "why"}, allowed=allowed, break_glass_enabled=True)


def test_second_factor() -> None:
    person = Principal.from_claims(
        {"kind": "person", "sub": "p", "role": "auditor", "amr": ["pwd"], "scope": ""}
    )
    assert not person.has_second_factor
    person = Principal.from_claims({"kind": "person", "sub": "p", "role": "auditor", "amr": ["pwd", "otp"]})
    assert person.has_second_factor


async def test_key_rotation_keeps_old_tokens_valid_and_the_old_key_published(app: Any) -> None:
    runtime = app.state.runtime
    ring = KeyRing(runtime.db, runtime.settings.secret_key, 300)
    tokens = TokenService(ring, 300)
    claims = {"kind": "system", "sub": "c", "client_id": "c"}
    old_token, _ = await tokens.issue(claims, issuer="i", audience="a")
    old_kid = (await ring.signing_key()).kid
    new_kid = await ring.rotate()
    assert new_kid != old_kid and (await ring.signing_key()).kid == new_kid
    published = {k["kid"] for k in (await ring.jwks())["keys"]}
    assert {old_kid, new_kid} <= published
    # another process (a fresh ring) verifies both the old and the new key's tokens
    other = TokenService(KeyRing(runtime.db, runtime.settings.secret_key, 300), 300)
    assert (await other.verify(old_token, issuer="i", audience="a"))["sub"] == "c"
    new_token, _ = await tokens.issue(claims, issuer="i", audience="a")
    assert (await other.verify(new_token, issuer="i", audience="a"))["sub"] == "c"
    # a retired key whose tokens have all expired is no longer published
    stale = KeyRing(runtime.db, runtime.settings.secret_key, 300)
    stale._retention = stale._retention * 0
    assert old_kid not in {k["kid"] for k in (await stale.jwks())["keys"]}
    with pytest.raises(InvalidToken):
        await TokenService(stale, 300).verify(old_token, issuer="i", audience="a")


def test_private_keys_are_stored_encrypted(app: Any) -> None:
    ring = KeyRing(app.state.runtime.db, "secret-one-" * 4, 300)
    other = KeyRing(app.state.runtime.db, "secret-two-" * 4, 300)
    sealed = ring._fernet.encrypt(b'{"d": "private"}')
    assert b"private" not in sealed
    with pytest.raises(Exception):  # noqa: B017 - any failure to decrypt will do
        other._fernet.decrypt(sealed)


def _public(key: Any) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


@pytest.mark.parametrize(
    ("keys", "why"),
    [
        ([{"kty": "RSA", "n": "abc", "e": "AQAB", "kid": "bad"}], "not a valid RSA public key"),
        ([_public(ECKey.generate_key("P-256", parameters={"kid": "p256"}))], "P-384"),
        ([_public(RSAKey.generate_key(1024, parameters={"kid": "small"}))], "2048 bits"),
        (
            [
                _public(ECKey.generate_key("P-384", parameters={"kid": "twice"})),
                _public(ECKey.generate_key("P-384", parameters={"kid": "twice"})),
            ],
            "given twice",
        ),
        (
            [{**_public(ECKey.generate_key("P-384", parameters={"kid": "off"})), "y": "AAAA" * 16}],
            "not a valid EC public key",
        ),
    ],
)
def test_a_jwks_the_token_endpoint_could_not_use_is_refused_at_registration(
    keys: list[dict[str, Any]], why: str
) -> None:
    """Found by review: such keys were registered, and the client's first token request was a 500."""
    with pytest.raises(BadRequest, match=why):
        check_jwks({"keys": keys})
    good = [_public(RSAKey.generate_key(2048, parameters={"kid": "ok"}))]
    assert check_jwks({"keys": good}) == {"keys": good}
