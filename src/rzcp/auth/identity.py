"""What an identity provider reports about who logged in, and the login errors sent back to the client."""

from __future__ import annotations

from dataclasses import dataclass


class AuthorizeError(Exception):
    """An error to show on the gateway's page (`redirect` None) or to send back to the client."""

    def __init__(self, error: str, description: str, redirect: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect = redirect


@dataclass(frozen=True)
class Identity:
    """What the identity provider reports. `bsn` stays in memory only: it is looked up, never stored."""

    subject: str
    bsn: str | None
    acr: str | None
    amr: tuple[str, ...]
