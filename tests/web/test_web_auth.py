"""`sohoa web`'s gate (login with hashed passwords and sessions, or a reverse proxy), its
configuration and its runbook page: Flask's test client, no database needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug.security import generate_password_hash

from sohoa.cli import main
from sohoa.config import Settings
from sohoa.errors import ConfigError, ExitCode
from tests.support.monitoring_helpers import EXPECTED_ALERTS
from web.app import _safe_next, create_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "mật-khẩu-đủ-dài"


def _app(**web):
    web.setdefault("users", {"van-phong": generate_password_hash(PASSWORD)})
    return create_app(Settings(web=web))


def _csrf(client) -> str:
    client.get("/dang-nhap")
    with client.session_transaction() as s:
        return s["csrf"]


def _login(client, name: str, password: str, next_: str = "/so-tay"):
    return client.post("/dang-nhap", data={"ten": name, "mat-khau": password,
                                           "csrf": _csrf(client), "next": next_})


def test_a_visitor_without_a_session_is_sent_to_the_login_page() -> None:
    client = _app().test_client()
    resp = client.get("/so-tay")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/dang-nhap?next=/so-tay")
    for path in ("/", "/cham-tien-do", "/diem/xa-a", "/tra-cuu?ma=HS", "/bao-cao",
                 "/bao-cao/tien-do?thang=03/2026"):
        assert client.get(path).status_code == 302, path


def test_a_wrong_password_is_refused_and_the_right_one_opens_a_session() -> None:
    client = _app().test_client()
    bad = _login(client, "van-phong", "sai-mật-khẩu")
    assert bad.status_code == 401
    assert "Tên đăng nhập hoặc mật khẩu không đúng" in bad.get_data(as_text=True)
    unknown = _login(client, "ai-do", PASSWORD)
    assert unknown.status_code == 401
    ok = _login(client, "van-phong", PASSWORD)
    assert ok.status_code == 302 and ok.headers["Location"] == "/so-tay"
    page = client.get("/so-tay")
    assert page.status_code == 200
    assert "van-phong" in page.get_data(as_text=True)
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_login_without_the_form_token_is_refused() -> None:
    client = _app().test_client()
    resp = client.post("/dang-nhap", data={"ten": "van-phong", "mat-khau": PASSWORD})
    assert resp.status_code == 400


def test_logging_out_ends_the_session() -> None:
    client = _app().test_client()
    _login(client, "van-phong", PASSWORD)
    with client.session_transaction() as s:
        token = s["csrf"]
    assert client.post("/dang-xuat", data={"csrf": "khác"}).status_code == 400
    assert client.post("/dang-xuat", data={"csrf": token}).status_code == 302
    assert client.get("/so-tay").status_code == 302


def test_repeated_failures_lock_the_name_out_even_for_the_right_password() -> None:
    client = _app(login_attempts=3).test_client()
    for _ in range(3):
        assert _login(client, "van-phong", "sai").status_code == 401
    locked = _login(client, "van-phong", PASSWORD)
    assert locked.status_code == 401
    assert "Sai quá nhiều lần" in locked.get_data(as_text=True)


def test_a_session_of_a_user_removed_from_the_config_is_no_longer_valid() -> None:
    app = _app()
    client = app.test_client()
    _login(client, "van-phong", PASSWORD)
    app.extensions["sohoa"].web.users.clear()
    assert client.get("/so-tay").status_code == 302


@pytest.mark.parametrize(("target", "safe"), [
    ("/diem/xa-a?trang=2", "/diem/xa-a?trang=2"), ("https://example.com/", "/"),
    ("//example.com/x", "/"), ("javascript:alert(1)", "/"), ("", "/"), (None, "/"),
])
def test_the_page_after_login_is_always_on_this_site(target, safe) -> None:
    assert _safe_next(target) == safe


def test_behind_a_proxy_only_the_trusted_address_with_a_user_header_is_served() -> None:
    app = _app(auth="proxy", users={}, trusted_proxies=["127.0.0.1"],
               proxy_user_header="X-Remote-User")
    client = app.test_client()
    far = client.get("/so-tay", environ_base={"REMOTE_ADDR": "10.1.2.3"},
                     headers={"X-Remote-User": "van-phong"})
    assert far.status_code == 403
    no_user = client.get("/so-tay", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert no_user.status_code == 403
    assert "đăng nhập qua cổng" in no_user.get_data(as_text=True)
    ok = client.get("/so-tay", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                    headers={"X-Remote-User": "van-phong"})
    assert ok.status_code == 200 and "van-phong" in ok.get_data(as_text=True)


def test_a_proxy_user_list_limits_who_may_read() -> None:
    client = _app(auth="proxy", users={}, proxy_users=["lanh-dao"]).test_client()
    env = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/so-tay", environ_base=env,
                      headers={"X-Remote-User": "khach"}).status_code == 403
    assert client.get("/so-tay", environ_base=env,
                      headers={"X-Remote-User": "lanh-dao"}).status_code == 200


def test_pages_carry_headers_that_keep_them_out_of_frames_and_caches() -> None:
    resp = _app().test_client().get("/dang-nhap")
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


def test_the_config_takes_password_hashes_only() -> None:
    from sohoa.config import load_config

    with pytest.raises(ConfigError, match="hash-password"):
        load_config(web={"users": {"van-phong": "mat-khau-ro"}})
    ok = load_config(web={"users": {"van-phong": generate_password_hash("x" * 12)}})
    assert ok.masked()["web"]["users"]["van-phong"] != ok.web.users["van-phong"]


def test_sohoa_web_refuses_to_start_without_a_user(monkeypatch) -> None:
    monkeypatch.delenv("SOHOA_WEB__USERS", raising=False)
    res = CliRunner().invoke(main, ["web"])
    assert res.exit_code == ExitCode.CONFIG
    assert "sohoa web hash-password" in res.output


def test_hash_password_prints_a_hash_the_config_takes() -> None:
    from werkzeug.security import check_password_hash

    res = CliRunner().invoke(main, ["web", "hash-password", "--password-stdin", "van-phong"],
                             input=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    m = re.fullmatch(r'van-phong = "(.+)"\n', res.output)
    assert m and check_password_hash(m.group(1), PASSWORD)
    Settings(web={"users": {"van-phong": m.group(1)}})
    short = CliRunner().invoke(main, ["web", "hash-password", "--password-stdin"],
                               input="ngan\n")
    assert short.exit_code == ExitCode.DATA


def test_every_alert_links_to_a_heading_of_the_served_runbook() -> None:
    client = _app().test_client()
    _login(client, "van-phong", PASSWORD)
    html = client.get("/so-tay").get_data(as_text=True)
    ids = set(re.findall(r'<h[1-6] id="([a-z0-9]+)"', html))
    alerts = (ROOT / "monitoring/prometheus/rules/alerts.yml").read_text(encoding="utf-8")
    anchors = re.findall(r'runbook_url: "[^"#]*#([a-z0-9]+)"', alerts)
    assert set(anchors) == {a.lower() for a in EXPECTED_ALERTS}
    assert set(anchors) <= ids
    assert "<script" not in html


def test_a_store_that_cannot_be_reached_gives_a_sentence_not_a_trace() -> None:
    app = create_app(Settings(
        web={"users": {"van-phong": generate_password_hash(PASSWORD)}},
        postgres={"dsn": "postgresql://x@127.0.0.1:1/none",
                  "reader_dsn": "postgresql://x@127.0.0.1:1/none", "connect_timeout_s": 1}))
    client = app.test_client()
    _login(client, "van-phong", PASSWORD)
    resp = client.get("/")
    assert resp.status_code == 503
    assert "Không kết nối được cơ sở dữ liệu tiến độ" in resp.get_data(as_text=True)
