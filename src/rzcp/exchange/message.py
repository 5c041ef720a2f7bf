"""What a pushed message Bundle must say before the region carries it, and what the gateway adds to it on
the way out. Plain functions over the Bundle's JSON; rzcp.exchange.outbox calls them.

One patient (`message_bsn`, 422 naming the element). A push is decided with one patient's consent and
recorded under one patient, so the gateway must be sure the message concerns that patient and no other:
- every Patient is an entry of the Bundle, never contained, and carries a BSN; all carry the same one (a
  second Patient entry with it is the same person);
- that is the only BSN anywhere in the Bundle (an identifier, a logical reference; under the BSN's URL or
  its OID): a second BSN is a second person;
- every reference to a Patient (by the type in the reference, `Reference.type`, or because it resolves to
  one) names a Patient entry: its fullUrl (`urn:uuid:...` or an absolute URL), or `Patient/<id>` where an
  entry's fullUrl ends in it or an entry has that id. A Patient elsewhere (the sender's server, the
  gateway's regional id, a conditional reference) could be anyone;
- a `urn:` reference names an entry (the receiver could not resolve it either);
- the `subject`, `patient` and `beneficiary` of every resource, contained ones too (the elements the audit
  reads a patient from) are that Patient: a reference as above or the BSN itself, not a Group, not
  something the gateway cannot resolve.
Such a message is valid FHIR, so these are 422 (as the store's business rules are), not 400. Identifiers
of other systems (a hospital's patient number) are the sender's namespace, not checked.

The sender (`check_sender`, 403). The token says which member sends; a MessageHeader that names another
organisation as `sender`, or another member's endpoint as `source.endpoint`, is refused: the receiver would
believe the wrong sender. A sender is named by its URA identifier or its directory Organization
(`Organization/ura-<URA>`, or an Organization in the Bundle with its URA); a sender the gateway cannot tie
to a URA is refused too. No sender at all is allowed (R4: 0..1); the gateway fills it in on delivery.

On the way out (`as_delivered`) the gateway states the sender itself, where the sender cannot forge it: the
Bundle and every resource it carries get the source tag a pull gives (a `meta.security` coding naming the
member's URA, `meta.source` its FHIR base), whatever source tags the sender wrote are removed, and an
absent MessageHeader.sender becomes the member's URA.
"""

from __future__ import annotations

import copy
import posixpath
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address
from typing import Any
from urllib.parse import unquote

from rzcp.auth.bsn import BSN_SYSTEM, is_bsn_system, is_valid_bsn
from rzcp.errors import Forbidden, InvalidResource
from rzcp.exchange.adapters import Member
from rzcp.exchange.directory import URA_SYSTEM, organization_id
from rzcp.exchange.pull import SOURCE_SYSTEM, without_source
from rzcp.fhir.nodes import json_objects

#: The elements that say whom a resource is about (as the audit reads them: rzcp.audit.http).
SUBJECT_ELEMENTS = ("subject", "patient", "beneficiary")
_TYPED_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}$")
_CONDITIONAL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)\?")
_DIRECTORY_ORGANIZATION = re.compile(r"(?:^|/)Organization/ura-([A-Za-z0-9\-.]+)$")


@dataclass(frozen=True)
class Target:
    """Where a reference leads as far as the Bundle tells: the resource it resolves to (None: not in
    the Bundle), and its type (None: unknown)."""

    resource: Mapping[str, Any] | None
    res_type: str | None


class MessageIndex:
    """The Bundle's entries by the names a reference may use for them."""

    def __init__(self, bundle: Mapping[str, Any]) -> None:
        self.entries: list[Mapping[str, Any]] = []
        self._by_url: dict[str, Mapping[str, Any]] = {}
        self._by_tail: dict[str, Mapping[str, Any]] = {}
        self._entry_ids: set[int] = set()
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, Mapping) else None
            if not isinstance(resource, Mapping):
                continue
            self.entries.append(resource)
            self._entry_ids.add(id(resource))
            url = entry.get("fullUrl")
            if isinstance(url, str):
                self._by_url.setdefault(url, resource)
                tail = _TYPED_TAIL.search(url) if "://" in url else None
                if tail:
                    self._by_tail.setdefault(tail.group(0).lstrip("/"), resource)
            if isinstance(resource.get("id"), str):
                self._by_tail.setdefault(f"{resource.get('resourceType')}/{resource['id']}", resource)

    def is_entry(self, resource: Mapping[str, Any] | None) -> bool:
        """Whether `resource` is an entry's own (not a contained one, nor one from elsewhere)."""
        return id(resource) in self._entry_ids

    def resolve(self, reference: Mapping[str, Any], container: Mapping[str, Any]) -> Target:
        """`container`: the entry resource the reference is in (where `#id` looks)."""
        declared = reference.get("type") if isinstance(reference.get("type"), str) else None
        text = reference.get("reference")
        if not isinstance(text, str):
            return Target(None, declared)
        url = text.split("/_history/")[0]
        if url.startswith("#"):
            found = _contained(container, url[1:])
        else:
            found = self._by_url.get(url) or (None if ":" in url else self._by_tail.get(url))
        if found is not None:
            return Target(found, str(found.get("resourceType")))
        named = _TYPED_TAIL.search(url) or _CONDITIONAL.search(url)
        return Target(None, named.group(1) if named else declared)


def _contained(container: Mapping[str, Any], local_id: str) -> Mapping[str, Any] | None:
    if not local_id:
        return container
    for resource in container.get("contained") or []:
        if isinstance(resource, Mapping) and resource.get("id") == local_id:
            return resource
    return None


def _names_bsn(node: Mapping[str, Any]) -> bool:
    """An identifier (or any object with a `system`) under the BSN, however the system is spelled: the
    URL, the OID with or without `urn:oid:`, another case, a trailing slash, `https`."""
    system = node.get("system")
    return isinstance(system, str) and is_bsn_system(system)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _refuse(message: str, path: str, code: str = "business-rule") -> InvalidResource:
    return InvalidResource(message, code=code, expression=(path,))


# --- what a message may carry --------------------------------------------------------------------------


def check_flat(index: MessageIndex) -> None:
    """InvalidResource (422) for a resource the gateway could not decide or tag: a Bundle inside the
    message (a document, a collection: its resources would travel undecided), or a contained resource
    that contains again (R4's dom-2 forbids it). Consent is decided, and the sender stated, per entry and
    per contained resource; deeper is not looked at, so it is not let through."""
    for i, resource in enumerate(index.entries):
        path = f"Bundle.entry[{i}].resource"
        if resource.get("resourceType") == "Bundle":
            raise _refuse(
                "a message carries its resources as entries of its own, not inside another Bundle: "
                "consent is decided per resource",
                path,
            )
        for j, inner in enumerate(_as_list(resource.get("contained"))):
            if not isinstance(inner, Mapping):
                continue
            if inner.get("resourceType") == "Bundle" or inner.get("contained"):
                raise _refuse(
                    "a contained resource is not a Bundle and contains nothing itself (R4 dom-2)",
                    f"{path}.contained[{j}]",
                )


# --- one patient ---------------------------------------------------------------------------------------


def message_bsn(bundle: Mapping[str, Any], index: MessageIndex) -> str:
    """The BSN of the one patient the message is about; InvalidResource (422) when the message does not
    concern exactly one patient that the gateway can be sure of."""
    bsn = _patients_bsn(index)
    for i, resource in enumerate(index.entries):
        _check_resource(resource, f"Bundle.entry[{i}].resource", index)
    for path, node in json_objects(bundle, "Bundle"):
        if _names_bsn(node) and "value" in node and str(node["value"]) != bsn:
            raise _refuse("a message carries the BSN of its one patient only; this is another", path)
    return bsn


def _patients_bsn(index: MessageIndex) -> str:
    """The BSN all Patient entries carry."""
    found: dict[str, str] = {}
    for i, resource in enumerate(index.entries):
        if resource.get("resourceType") != "Patient":
            continue
        path = f"Bundle.entry[{i}].resource.identifier"
        bsns = {
            str(identifier.get("value"))
            for identifier in _as_list(resource.get("identifier"))
            if isinstance(identifier, Mapping) and _names_bsn(identifier) and identifier.get("value")
        }
        if not bsns:
            raise _refuse(f"every Patient in a message carries its BSN ({BSN_SYSTEM})", path, "required")
        for bsn in bsns:
            found.setdefault(bsn, path)
    if not found:
        raise _refuse(
            f"the message must carry its Patient with a BSN identifier ({BSN_SYSTEM})",
            "Bundle.entry",
            "required",
        )
    if len(found) > 1:
        raise _refuse(
            "a message is about one patient: its Patient entries carry more than one BSN",
            list(found.values())[1],
        )
    bsn, path = next(iter(found.items()))
    if not is_valid_bsn(bsn):  # a typo told as one: checked without a lookup, it discloses nothing
        raise _refuse("the Patient's BSN is not valid (nine digits passing the 11-check)", path, "value")
    return bsn


def _check_resource(resource: Mapping[str, Any], path: str, index: MessageIndex) -> None:
    """The references and subjects of one entry resource, its contained resources included."""
    nodes = list(json_objects(resource, path))
    for where, node in nodes:
        if node is not resource and node.get("resourceType") == "Patient":
            raise _refuse(
                "a Patient in a message is an entry of its own, with its BSN, never contained", where
            )
    for where, node in nodes:
        if "resourceType" in node:
            _check_subjects(node, where, resource, index)
        elif isinstance(node.get("reference"), str) or node.get("type") == "Patient":
            _check_reference(node, where, resource, index)


def _check_reference(
    reference: Mapping[str, Any], path: str, container: Mapping[str, Any], index: MessageIndex
) -> None:
    target = index.resolve(reference, container)
    text = reference.get("reference")
    if isinstance(text, str) and text.startswith("urn:") and target.resource is None:
        raise _refuse(f"{text} names no entry of the Bundle", path)
    if "Patient" in (target.res_type, reference.get("type")) and not _is_the_patient(
        reference, container, index
    ):
        raise _refuse(
            "a reference to a patient names the message's Patient entry (its fullUrl); a Patient outside "
            "the message cannot be told apart from another person",
            path,
        )


def _check_subjects(
    resource: Mapping[str, Any], path: str, container: Mapping[str, Any], index: MessageIndex
) -> None:
    if resource.get("resourceType") == "Patient":
        return
    for name in SUBJECT_ELEMENTS:
        for reference in _as_list(resource.get(name)):
            if not _is_the_patient(reference, container, index):
                raise _refuse(
                    f"{name} names the message's patient: its Patient entry (by fullUrl), or its BSN",
                    f"{path}.{name}",
                )


def _is_the_patient(reference: Any, container: Mapping[str, Any], index: MessageIndex) -> bool:
    """A Patient entry of the Bundle, or a logical reference by BSN (its value is checked as any BSN)."""
    if not isinstance(reference, Mapping) or reference.get("type") not in (None, "Patient"):
        return False
    if "reference" not in reference:
        identifier = reference.get("identifier")
        return isinstance(identifier, Mapping) and _names_bsn(identifier)
    target = index.resolve(reference, container)
    return target.res_type == "Patient" and index.is_entry(target.resource)


# --- the sender ----------------------------------------------------------------------------------------


def check_sender(
    header: Mapping[str, Any], index: MessageIndex, sender_ura: str, members: Mapping[str, Member]
) -> None:
    """Forbidden (403) when the MessageHeader claims to come from anyone but the calling member."""
    for element in ("sender", "responsible"):
        claimed = header.get(element)
        if claimed is not None and _sender_uras(claimed, header, index) != {sender_ura}:
            raise Forbidden(
                f"MessageHeader.{element} must be your own organisation (URA {sender_ura}), named by its URA "
                f"identifier or Organization/{organization_id(sender_ura)}, or be left out",
                expression=(f"MessageHeader.{element}",),
            )
    endpoint = (header.get("source") or {}).get("endpoint")
    owner = endpoint_owner(endpoint, members)
    if owner is not None and owner != sender_ura:
        raise Forbidden(
            f"MessageHeader.source.endpoint is the endpoint of another member ({owner})",
            expression=("MessageHeader.source.endpoint",),
        )


def _sender_uras(claimed: Any, header: Mapping[str, Any], index: MessageIndex) -> set[str] | None:
    """The URAs the sender reference names; None when it names something the gateway cannot tie to a
    URA (another identifier system, a Practitioner, a display only)."""
    if not isinstance(claimed, Mapping) or claimed.get("type") not in (None, "Organization"):
        return None
    identifier, text = claimed.get("identifier"), claimed.get("reference")
    if identifier is None and text is None:
        return None
    found: set[str] = set()
    if identifier is not None:
        if not isinstance(identifier, Mapping) or identifier.get("system") != URA_SYSTEM:
            return None
        found.add(str(identifier.get("value")))
    if isinstance(text, str):
        named = _reference_uras(claimed, text, header, index)
        if named is None:
            return None
        found |= named
    return found


def _reference_uras(
    claimed: Mapping[str, Any], text: str, header: Mapping[str, Any], index: MessageIndex
) -> set[str] | None:
    """What the receiver would find: the entry the reference resolves to in the Bundle (its URAs) and, for
    the directory's `Organization/ura-<URA>`, that URA too; an entry that says another URA than its
    directory address disagrees with it and both count."""
    found: set[str] = set()
    directory = _DIRECTORY_ORGANIZATION.search(text.split("/_history/")[0])
    if directory:
        found.add(directory.group(1))
    target = index.resolve(claimed, header)
    if target.resource is not None:
        if target.res_type != "Organization":
            return None
        uras = {
            str(i.get("value"))
            for i in _as_list(target.resource.get("identifier"))
            if isinstance(i, Mapping) and i.get("system") == URA_SYSTEM
        }
        if not uras:
            return None
        found |= uras
    return found or None


def endpoint_owner(endpoint: Any, members: Mapping[str, Member]) -> str | None:
    """The member whose server the URL points at: the same host and port, however the URL spells them
    (`127.1`, `[::ffff:127.0.0.1]`, `localhost`, `0.0.0.0`, `https:host`, a fullwidth or percent-encoded
    host are all read as browsers' and most clients' URL parsers read them), and a path under the member's
    own, case, dot segments and doubled slashes aside; of several, the longest. A list of spellings to
    refuse would always miss one (a probe found six, a review six more), so the place is compared."""
    place = _place(endpoint) if isinstance(endpoint, str) else None
    if place is None:
        return None
    host, path = place
    owners: list[tuple[str, str]] = []
    for member in members.values():
        at = _place(member.base_url)
        if at is not None and at[0] == host and f"{path}/".startswith(f"{at[1]}/"):
            owners.append((member.ura, at[1]))
    return max(owners, key=lambda owner: len(owner[1]))[0] if owners else None


def is_server_address(url: Any) -> bool:
    """Whether `url` names an http(s) server (a `urn:` does not), read as `endpoint_owner` reads it."""
    return isinstance(url, str) and _place(url) is not None


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.DOTALL)


def _place(url: str) -> tuple[str, str] | None:
    """(host:port, path) of an http(s) URL as the WHATWG URL standard parses it: tabs and newlines gone,
    any number of slashes or backslashes after the scheme, user info dropped, the host percent-decoded and
    IDNA-mapped (fullwidth letters, the ideographic full stop), the default port filled in; the path
    percent-decoded, without dot segments, doubled or trailing slashes, in lower case. None for what names
    no http(s) server (a `urn:`, a URL no parser reads)."""
    found = _SCHEME.fullmatch(re.sub(r"[\t\n\r]", "", url).strip().replace("\\", "/"))
    if found is None or found.group(1).lower() not in ("http", "https"):
        return None
    scheme, rest = found.group(1).lower(), found.group(2).lstrip("/")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    path = re.split(r"[?#]", rest[len(authority) :], maxsplit=1)[0]
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, port_text = hostport[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, colon, port_text = hostport.rpartition(":")
        if not colon:
            host, port_text = hostport, ""
    try:
        port = int(port_text) if port_text else (443 if scheme == "https" else 80)
        host = unquote(host).encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        return None
    if not host or not 0 < port < 65536:
        return None
    path = re.sub(r"/+", "/", "/" + unquote(path).replace("\\", "/"))
    return f"{_canonical_host(host)}:{port}", posixpath.normpath(path).rstrip("/").lower()


def _canonical_host(host: str) -> str:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        address = ip_address(host)
    except ValueError:
        try:  # the shorthand forms the resolver takes: 127.1, 0x7f.0.0.1, 2130706433
            address = ip_address(socket.inet_aton(host))
        except OSError:
            return host
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # 0.0.0.0 and :: reach this machine too (Linux connects them to a local listener)
    return "loopback" if address.is_loopback or address.is_unspecified else str(address)


# --- on the way out ------------------------------------------------------------------------------------


def as_delivered(bundle: Mapping[str, Any], sender_ura: str, sender: Member | None) -> dict[str, Any]:
    """The message as the receiver gets it: the gateway's statement of who sent it on the Bundle and on
    every resource carried. `sender`: the member as registered now (None: no longer known)."""
    out: dict[str, Any] = copy.deepcopy(dict(bundle))
    coding = {"system": SOURCE_SYSTEM, "code": sender_ura}
    if sender is not None:
        coding["display"] = sender.name
    source = sender.base_url if sender is not None else None
    _stamp(out, coding, source)
    entries = [e for e in out.get("entry") or [] if isinstance(e, dict)]
    resources = [e["resource"] for e in entries if isinstance(e.get("resource"), dict)]
    for resource in resources:
        _stamp(resource, coding, source)
        contained = resource.get("contained")
        if isinstance(contained, list):
            resource["contained"] = [without_source(c) for c in contained]
    if resources:  # the MessageHeader
        resources[0].setdefault("sender", _sender_reference(coding))
    return out


def _stamp(resource: dict[str, Any], coding: dict[str, str], source: str | None) -> None:
    """Replace whatever source the sender wrote in `meta` with the gateway's."""
    meta = dict(without_source(resource).get("meta") or {})
    meta["security"] = [*(meta.get("security") or []), dict(coding)]
    if source is not None:
        meta["source"] = source
    resource["meta"] = meta


def _sender_reference(coding: Mapping[str, str]) -> dict[str, Any]:
    reference: dict[str, Any] = {
        "type": "Organization",
        "identifier": {"system": URA_SYSTEM, "value": coding["code"]},
    }
    if "display" in coding:
        reference["display"] = coding["display"]
    return reference
