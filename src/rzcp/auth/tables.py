"""The auth schema: who may call, kept in the database so every gateway process agrees at once.

auth_members        member organisations (URA), active or suspended
auth_clients        their systems' OAuth clients: public keys (a JWKS or a jwks_uri), scopes, role
auth_assertion_jtis client-assertion ids seen, until the assertion expires (replay protection)
auth_signing_keys   the gateway's own token-signing keys, private halves sealed with the secret key
auth_codes          authorization codes of the patient login (hashed, single use, short-lived)
auth_ended_sessions the ids (jti) of patient and staff tokens ended by logout, until they would expire
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Index, String, Table, Text, UniqueConstraint

from rzcp.store.tables import PrimaryKey, metadata

members = Table(
    "auth_members",
    metadata,
    Column("ura", String(16), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("category", String(64), nullable=False),
    Column("endpoint", String(1024), nullable=False),
    Column("adapter", String(64), nullable=False),
    #: active or suspended; a suspended member's clients are refused at their next request.
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("changed_at", DateTime(timezone=False), nullable=False),
    #: The last suspension: a token issued before it stays refused after the member is reinstated.
    Column("suspended_at", DateTime(timezone=False), nullable=True),
)

clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(128), primary_key=True),
    Column("member_ura", String(16), ForeignKey("auth_members.ura"), nullable=False),
    #: the registered JWKS document (public keys only), or NULL when the keys live at jwks_url.
    Column("jwks", Text, nullable=True),
    Column("jwks_url", String(1024), nullable=True),
    #: the space-separated `system/...` scopes this client may be granted.
    Column("scope", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("revoked_at", DateTime(timezone=False), nullable=True),
    Index(None, "member_ura"),
)

assertion_jtis = Table(
    "auth_assertion_jtis",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("client_id", String(128), nullable=False),
    Column("jti", String(256), nullable=False),
    Column("expires_at", DateTime(timezone=False), nullable=False),
    UniqueConstraint("client_id", "jti"),
    Index(None, "expires_at"),
)

signing_keys = Table(
    "auth_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("public_jwk", Text, nullable=False),
    #: the private JWK, encrypted with a key derived from RZCP_SECRET_KEY.
    Column("private_jwk", Text, nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    #: when a newer key took over signing; published at the jwks endpoint until its last tokens expire.
    Column("retired_at", DateTime(timezone=False), nullable=True),
)

codes = Table(
    "auth_codes",
    metadata,
    #: SHA-256 of the code: a database reader cannot redeem what it sees.
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("redirect_uri", String(1024), nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("scope", Text, nullable=False),
    #: the claims of the token to issue (patient id, person subject, role, acr, amr) as JSON; never a BSN.
    Column("claims", Text, nullable=False),
    Column("expires_at", DateTime(timezone=False), nullable=False),
    Column("used_at", DateTime(timezone=False), nullable=True),
    Index(None, "expires_at"),
)

AUTH_TABLES = (members, clients, assertion_jtis, signing_keys, codes)


ended_sessions = Table(
    "auth_ended_sessions",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=False), nullable=False),
    Index(None, "expires_at"),
)
