"""Who may read the page: a login against hashed passwords in the config with a signed session
cookie, or a reverse proxy that authenticates and names the user in a header.

- ``web.auth = "login"``: ``web.users`` maps a name to a Werkzeug password hash (scrypt by
  default; `sohoa web hash-password` makes one). A session lasts ``web.session_hours``; after
  ``web.login_attempts`` failures for one name from one address, that pair is refused for
  ``web.login_lockout_s``. The login and logout forms carry a token bound to the session.
- ``web.auth = "proxy"``: only a request whose peer address is in ``web.trusted_proxies`` is
  served, and only with ``web.proxy_user_header`` set (the proxy must overwrite a header of
  that name sent by the browser); ``web.proxy_users``, when not empty, lists who may read.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque

from werkzeug.security import check_password_hash, generate_password_hash

from sohoa.config import WebConfig

# Compared against when the name is unknown, so a wrong name costs what a wrong password does.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


class LoginThrottle:
    """Recent failures per (name, address), in memory: one `sohoa web` process."""

    def __init__(self, attempts: int, lockout_s: float) -> None:
        self.attempts = attempts
        self.lockout_s = lockout_s
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures[key]
        while q and now - q[0] > self.lockout_s:
            q.popleft()
        return q

    def locked(self, name: str, address: str) -> bool:
        with self._lock:
            return len(self._recent((name, address), time.monotonic())) >= self.attempts

    def failed(self, name: str, address: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent((name, address), now).append(now)

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop((name, address), None)


def check_login(cfg: WebConfig, name: str, password: str) -> bool:
    stored = cfg.users.get(name)
    hashed = stored.get_secret_value() if stored is not None else _DUMMY_HASH
    ok = check_password_hash(hashed, password)
    return ok and stored is not None


def proxy_user(cfg: WebConfig, remote_addr: str | None, headers) -> tuple[str | None, str]:
    """(user, why not): the proxy's user, or None and the refusal in Vietnamese."""
    if remote_addr not in cfg.trusted_proxies:
        return None, "Trang chỉ nhận yêu cầu qua cổng xác thực (reverse proxy) đã cấu hình."
    user = (headers.get(cfg.proxy_user_header) or "").strip()
    if not user:
        return None, "Cổng xác thực chưa cho biết người dùng: hãy đăng nhập qua cổng."
    if cfg.proxy_users and user not in cfg.proxy_users:
        return None, f"Tài khoản {user} chưa được cấp quyền xem trang này."
    return user, ""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def hash_password(password: str) -> str:
    return generate_password_hash(password)
