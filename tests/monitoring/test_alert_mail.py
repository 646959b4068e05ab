"""The alert mail as the unit receives it: the shipped Alertmanager configuration and template,
run by the real Alertmanager (Debian's prometheus-alertmanager), deliver to a loopback SMTP
sink; the mail is read back and must be Vietnamese, with the site's name and id, the unit, the
figures, the deadline, the forecast, the severity and the runbook link. An alert near its
deadline (critical) reaches the central operators as well as the unit."""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
AM_DIR = ROOT / "monitoring" / "alertmanager"
START = datetime(2026, 3, 3, 2, 30, tzinfo=UTC)  # 09:30 in Hà Nội
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class _SinkServer(socketserver.ThreadingTCPServer):
    """Keeps every message received: (recipients, bytes)."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Sink)
        self.mails: list[tuple[list[str], bytes]] = []


class _Sink(socketserver.StreamRequestHandler):
    """Just enough SMTP for one client: no STARTTLS offered, every message kept."""

    server: _SinkServer

    def handle(self) -> None:
        self.wfile.write(b"220 sink ESMTP\r\n")
        rcpt: list[str] = []
        while line := self.rfile.readline():
            cmd = line.decode("ascii", "replace").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250-sink\r\n250 8BITMIME\r\n")
            elif verb == "RCPT":
                address = re.search(r"<(.*)>", cmd)
                assert address is not None, cmd
                rcpt.append(address.group(1))
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.server.mails.append((list(rcpt), data))
                rcpt.clear()
                self.wfile.write(b"250 kept\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def alertmanager(tmp_path: Path):
    if ALERTMANAGER is None:
        pytest.fail("prometheus-alertmanager not installed: run infra/install-system-deps.sh")
    sink = _SinkServer(("127.0.0.1", 0))
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    conf = tmp_path / "alertmanager"
    shutil.copytree(AM_DIR, conf)
    text = (conf / "alertmanager.yml").read_text(encoding="utf-8")
    # Only the delivery and the waits differ from the shipped file (a test cannot wait 1 min).
    text = text.replace('smtp_smarthost: "127.0.0.1:25"',
                        f'smtp_smarthost: "127.0.0.1:{sink.server_address[1]}"')
    text = text.replace("smtp_require_tls: true", "smtp_require_tls: false")
    text, n = re.subn(r"group_wait: \S+", "group_wait: 1s", text)
    assert n == 1
    (conf / "alertmanager.yml").write_text(text, encoding="utf-8")
    port = free_port()
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [ALERTMANAGER, "--config.file=alertmanager.yml", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        cwd=conf, stdout=log, stderr=subprocess.STDOUT, env={"TZ": "Asia/Ho_Chi_Minh"},
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "am.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    try:
        yield url, sink.mails, tmp_path / "am.log"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        sink.shutdown()


def test_a_unit_gets_a_vietnamese_mail_with_the_figures_and_the_deadline(alertmanager) -> None:
    url, mails, log = alertmanager
    description = ("Điểm số hóa Xã Phú Lâm (mã xa-phu-lam, đơn vị Huyện Tân Phú) còn 59.930 "
                   "trang, hạn hoàn thành 15/01/2027, còn 29 ngày làm việc: cần 2.066,6 trang "
                   "mỗi ngày làm việc. Tốc độ hiện nay 3,5 trang/ngày; dự kiến hoàn thành "
                   "25/07/2092. Cần tăng người, ca hoặc máy quét, hoặc điều chỉnh kế hoạch.")
    alert = {
        "labels": {"alertname": "SohoaSiteBehindSchedule", "site": "xa-phu-lam",
                   "name": "Xã Phú Lâm", "unit": "Huyện Tân Phú",
                   "unit_key": "huyen-tan-phu", "severity": "critical"},
        "annotations": {"summary": "Điểm Xã Phú Lâm (xa-phu-lam) dự kiến không kịp hạn",
                        "description": description,
                        "runbook_url": "http://127.0.0.1:18080/so-tay#sohoasitebehindschedule"},
        "startsAt": START.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    req = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps([alert]).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    except urllib.error.HTTPError as exc:
        raise AssertionError(exc.read().decode()) from None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(mails) < 2:
        time.sleep(0.5)
    assert len(mails) == 2, log.read_text()[-3000:]
    by_rcpt = {rcpt[0]: email.message_from_bytes(data, policy=email.policy.default)
               for rcpt, data in mails}
    # The unit's route and, the deadline being near, the central operators'.
    assert set(by_rcpt) == {"phong-noi-vu-tan-phu@example.gov.vn",
                            "van-hanh-sohoa@example.gov.vn"}
    msg = by_rcpt["phong-noi-vu-tan-phu@example.gov.vn"]
    assert msg["Subject"] == "[sohoa - KHẨN] Điểm Xã Phú Lâm (xa-phu-lam) dự kiến không kịp hạn"
    plain_part, html_part = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain_part is not None and html_part is not None
    text, html = plain_part.get_content(), html_part.get_content()
    for body in (text, html):
        for must in ("Xã Phú Lâm", "xa-phu-lam", "Huyện Tân Phú", "59.930", "2.066,6",
                     "15/01/2027", "25/07/2092", "KHẨN",
                     "http://127.0.0.1:18080/so-tay#sohoasitebehindschedule"):
            assert must in body, (must, body)
    assert "Điểm số hóa: Xã Phú Lâm (mã xa-phu-lam)" in text
    assert "Đơn vị: Huyện Tân Phú" in text
    assert "Bắt đầu: 09:30 ngày 03/03/2026" in text
    for english in ("Alerts Firing", "Labels", "Annotations", "Source"):
        assert english not in text
