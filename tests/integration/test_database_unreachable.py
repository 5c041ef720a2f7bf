"""The gateway without its database: a 503 the caller may retry, never a 500, and back to work once the
database is reachable again (an operator's walkthrough cut a gateway's connection with a relay like this
one and got 500 "Internal error" from the FHIR API and the token endpoint)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import pytest
from sqlalchemy.engine import make_url

from rzcp.app import create_app
from rzcp.settings import Settings
from tests.exchange.servers import free_port, serve

CONTEXT = {
    "X-Purpose-Of-Use": "TREAT",
    "X-Acting-Practitioner": "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900012345",
}


class Relay:
    """A TCP relay on a loopback port to the database server, which can be cut (every connection closed,
    nothing listening) and restored on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        with suppress(OSError):  # wakes the accepting thread: a close alone leaves the port listening
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def gateway_through(relay: Relay, database_url: str) -> Iterator[httpx.Client]:
    url = make_url(database_url).set(host="127.0.0.1", port=relay.port)
    settings = Settings(
        database_url=url.render_as_string(hide_password=False),
        auth_enabled=False,
        auto_migrate=True,
        outbox_worker=False,
    )
    with (
        serve(create_app(settings)) as base,
        httpx.Client(base_url=base, headers=CONTEXT, timeout=30) as http,
    ):
        yield http


def test_a_gateway_without_its_database_answers_503_and_recovers(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a server to cut the connection to: PostgreSQL's (SQLite is a file in the process)")
    server = make_url(database_url)
    relay = Relay((server.host or "127.0.0.1", server.port or 5432))
    relay.start()
    with gateway_through(relay, database_url) as http:
        assert http.get("/fhir/Organization").status_code == 200
        relay.cut()
        for method, path, body in (
            ("GET", "/fhir/Organization", None),
            ("GET", "/fhir/Organization", None),  # on the same connection: it was dropped after a 500
            ("POST", "/fhir/Organization", {"resourceType": "Organization", "name": "Praktijk Zuid"}),
            ("GET", "/readyz", None),
        ):
            response = http.request(method, path, json=body)
            assert response.status_code == 503, (path, response.status_code, response.text)
            if path.startswith("/fhir"):
                issue = response.json()["issue"][0]
                assert issue["code"] == "transient", response.text
        relay.start()
        deadline = time.monotonic() + 20
        while (response := http.get("/fhir/Organization")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert response.status_code == 200, response.text
    relay.cut()
