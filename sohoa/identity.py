"""Which site produced a record: every record a site agent sends carries an HMAC-SHA256 of its
topic, key and value under that site's own secret, and the centre's first readers of site
events (the assembly app, the progress consumer) refuse a record that is unsigned, signed
with a key the centre does not hold for the site it names, or signed by one site while its
payload claims another.

Kafka authenticates the connection (SASL/SCRAM: the site may only write site-events and
dead letters) but does not tell a consumer who produced a record; the signature carries that
proof with the record, through every copy and replay. Why HMAC rather than Ed25519 and what
it protects against: ``docs/architecture.md`` (Site identity).

Headers (Kafka record headers): ``sohoa-site`` = the signing site's id (UTF-8), ``sohoa-sig``
= ``v1`` + the 32-byte MAC of ``len(topic) topic len(key) key value`` (4-byte big-endian
lengths, so no two different records share a message).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from typing import Any

HEADER_SITE = "sohoa-site"
HEADER_SIG = "sohoa-sig"
_VERSION = b"v1"
MIN_SECRET_CHARS = 32

Headers = list[tuple[str, bytes]]


def _as_bytes(v: str | bytes | None) -> bytes:
    if v is None:
        return b""
    return v.encode("utf-8") if isinstance(v, str) else v


def _mac(secret: bytes, topic: str, key: bytes, value: bytes) -> bytes:
    t = topic.encode("utf-8")
    msg = b"".join((struct.pack(">I", len(t)), t, struct.pack(">I", len(key)), key, value))
    return hmac.digest(secret, msg, hashlib.sha256)


class Signer:
    """The agent's side: headers proving this site produced a record."""

    def __init__(self, site_id: str, secret: str) -> None:
        self.site = site_id.encode("utf-8")
        self.secret = secret.encode("utf-8")

    @classmethod
    def from_settings(cls, settings: Any) -> Signer | None:
        secret = settings.identity.site_secret
        if secret is None:
            return None
        return cls(settings.watcher.site_id, secret.get_secret_value())

    def headers(self, topic: str, key: str | bytes | None, value: bytes) -> Headers:
        mac = _mac(self.secret, topic, _as_bytes(key), value)
        return [(HEADER_SITE, self.site), (HEADER_SIG, _VERSION + mac)]


def _header_map(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None
                ) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    if not headers:
        return out
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        out.setdefault(k, []).append(_as_bytes(v))
    return out


_decode_site: Any = None


def _site_decoder() -> Any:
    """msgspec when installed (the centre has it: ~1 µs a record), else the json module."""
    try:
        import msgspec
    except ImportError:
        import json

        def from_json(value: bytes) -> str | None:
            doc = json.loads(value)
            site = doc.get("site_id") if isinstance(doc, dict) else None
            return site if isinstance(site, str) else None

        return from_json

    class _Site(msgspec.Struct):
        site_id: str | None = None

    decoder = msgspec.json.Decoder(_Site)
    return lambda value: decoder.decode(value).site_id


def payload_site(value: bytes | None) -> str | None:
    """The ``site_id`` a payload claims, read the way the contract's parsers read it (the last
    of duplicate keys wins, as in pydantic and msgspec); None when it names none."""
    global _decode_site
    if not value:
        return None
    if _decode_site is None:
        _decode_site = _site_decoder()
    try:
        return _decode_site(value)
    except Exception:  # not JSON, not an object, site_id not a string
        return None


class SiteGuard:
    """The centre's side. Enforcing once any site secret is configured (``identity.sites``):
    a centre cannot be half-protected. With none, every record passes (the local demo stack:
    see docs/architecture.md)."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.secrets = {site: s.encode("utf-8") for site, s in secrets.items()}

    @classmethod
    def from_settings(cls, settings: Any) -> SiteGuard:
        return cls({site: s.get_secret_value() for site, s in settings.identity.sites.items()})

    @property
    def enforcing(self) -> bool:
        return bool(self.secrets)

    def refusal(self, topic: str, key: str | bytes | None, value: bytes | None,
                headers: Any, claimed: str | None = None) -> str | None:
        """Why this record is not accepted as its site's, or None. ``claimed`` is the site the
        payload names when the caller has parsed it already."""
        if not self.secrets:
            return None
        h = _header_map(headers)
        sites, sigs = h.get(HEADER_SITE, []), h.get(HEADER_SIG, [])
        if not sites and not sigs:
            return "unsigned: no site signature (sohoa-site/sohoa-sig headers)"
        if len(sites) != 1 or len(sigs) != 1:
            return "bad signature: one sohoa-site and one sohoa-sig header expected"
        signer = sites[0].decode("utf-8", "replace")
        secret = self.secrets.get(signer)
        if secret is None:
            return f"unknown site key: no secret for {signer[:80]!r} at the centre"
        sig = sigs[0]
        if not sig.startswith(_VERSION) or not hmac.compare_digest(
                sig[len(_VERSION):], _mac(secret, topic, _as_bytes(key), value or b"")):
            return f"bad signature: not signed with the key of {signer!r}"
        if claimed is None:
            claimed = payload_site(value)
        if claimed != signer:
            return f"site mismatch: signed by {signer!r}, claims {str(claimed)[:80]!r}"
        return None

    def signed_by_site(self, headers: Any) -> bool:
        return bool(_header_map(headers).get(HEADER_SITE))
