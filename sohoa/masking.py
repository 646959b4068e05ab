"""Secrets never printed or logged: one place that knows what a secret looks like.

Masked wholly: values of secret fields (``SecretStr``) and of password-like keys (a name part
``password``, ``passwd``, ``pwd``, ``secret``, ``token``, ``credentials``, or a qualified
``…_key`` such as ``api_key``; a bare ``key`` is a Kafka record key and stays). Masked inside any
text: the password of a URL (``scheme://user:PASSWORD@host``, percent-encoded or not), of a
query string (``?password=…``, ``&sslpassword=…``, names percent-encoded too) and of libpq or
JAAS ``key=value`` pairs (``password=…``, ``password = 'a b'``, ``password="…"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from pydantic import SecretStr

MASK = "******"
_SECRET_PARTS = {"password", "passwd", "pwd", "pass", "passphrase", "secret", "secrets", "token",
                 "credential", "credentials", "apikey", "sslpassword"}
_SPLIT = re.compile(r"[^a-z0-9]+")
# scheme://user:password@ — greedy to the last '@' of the run: a password with an unencoded
# '@' or '/' is masked whole (over-masking a host is the safe side).
_URL_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^\s:/@?#]*:)(?P<pw>\S*)(?P<at>@)",
                           re.I)
# name=value in a query string or a libpq/JAAS conninfo; the value quoted or bare.
_PAIR = re.compile(
    r"""(?P<name>(?<![\w%.\-])[\w%.\-]+)(?P<eq>\s*=\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&'"]+)""")
# "name": "value" of JSON or of a Python dict's repr (an exception message, a payload).
_QUOTED_KEY = re.compile(
    r"""(?P<q>["'])(?P<name>[^"'\s]+)(?P=q)(?P<sep>\s*:\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,}\]]+)""")


def is_secret_name(name: str) -> bool:
    """True for a key whose value is a secret (``sasl_password``, ``api_key``, ``token``)."""
    parts = [p for p in _SPLIT.split(unquote(str(name)).lower()) if p]
    if any(p in _SECRET_PARTS for p in parts):
        return True
    return len(parts) > 1 and parts[-1] == "key"


def mask_text(text: str) -> str:
    """``text`` with every password it holds (URL, query string, key=value) replaced."""
    if not text:
        return text
    out = _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)

    def pair(m: re.Match[str]) -> str:
        if not is_secret_name(m["name"]):
            return m[0]
        return f"{m['name']}{m['eq']}{MASK}"

    def quoted(m: re.Match[str]) -> str:
        if not is_secret_name(m["name"]):
            return m[0]
        return f"{m['q']}{m['name']}{m['q']}{m['sep']}\"{MASK}\""

    return _QUOTED_KEY.sub(quoted, _PAIR.sub(pair, out))


def mask_tree(value: Any, key: str = "") -> Any:
    """A JSON-ready copy of a nested configuration or log payload, secrets masked."""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if not secret:
            return ""
        # A DSN keeps its host and database (useful), losing only its password.
        return mask_text(secret) if _names_a_location(key) else MASK
    if key and is_secret_name(key) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): mask_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_tree(v, key) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_text(str(value))


def _names_a_location(key: str) -> bool:
    parts = set(_SPLIT.split(key.lower()))
    return bool(parts & {"dsn", "url", "uri", "bootstrap"})
