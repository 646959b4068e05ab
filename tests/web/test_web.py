"""`sohoa web` in a real headless browser (Debian's Chromium through its chromedriver) on a
seeded campaign in the test stack's PostgreSQL: every page is loaded, what a person reads
there is checked against an independent tally of the seeded events, and each page is saved
as a PNG (tests/artefacts/web/, not committed), at desktop and phone width."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from werkzeug.security import generate_password_hash

from infra.procs import free_port
from tests.support.artefacts import artefact_dir
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.progress_store import apply_events, as_role, fresh_db
from tests.support.web_seed import (
    PLAN,
    RESCAN_SITE,
    UNPLANNED,
    Seeded,
    seed,
    working_days,
    write_plan,
)

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
USER, PASSWORD = "van-phong", "mật-khẩu-thử-nghiệm"
# Chromium on a closed network: no background traffic, no first-run, no sandbox as root.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--lang=vi-VN")


def vn(n: int) -> str:
    """vi-VN thousands, written here apart from consumers.vi."""
    return f"{n:,}".replace(",", ".")


def vn1(x: float) -> str:
    return f"{x:,.1f}".replace(",", "\x00").replace(".", ",").replace("\x00", ".")


@dataclass
class Site:
    url: str
    seeded: Seeded
    downloads: Path
    shots: Path


@pytest.fixture(scope="module")
def web(stack, tmp_path_factory) -> Iterator[Site]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are needed: infra/install-system-deps.sh")
    tmp = tmp_path_factory.mktemp("web")
    seeded = seed()
    writer = fresh_db(stack, "web")
    with psycopg.connect(writer) as conn:
        apply_events(conn, seeded.events, batch=400)
    env = {**stack.env, "SOHOA_POSTGRES__DSN": writer}
    res = run_sohoa(["campaign", "import", str(write_plan(seeded, tmp))], env)
    assert res.returncode == 0, res.stderr
    port = free_port()
    web_env = {
        **stack.env,
        # The page reads as the reader; the writer's DSN points nowhere, so a page that used
        # it would fail.
        "SOHOA_POSTGRES__DSN": "postgresql://sohoa_writer@127.0.0.1:1/none",
        "SOHOA_POSTGRES__READER_DSN": as_role(writer, "sohoa_reader"),
        "SOHOA_WEB__PORT": str(port),
        "SOHOA_WEB__USERS": f'{{"{USER}": "{generate_password_hash(PASSWORD)}"}}',
        "SOHOA_LOGGING__JSON": "false",
    }
    proc = SohoaProcess(["web"], web_env, tmp / "web.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/suc-khoe", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, "sohoa web to listen", procs=(proc,), interval=0.5)
        yield Site(url, seeded, tmp / "downloads", artefact_dir("web"))
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser(web: Site, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"   # Selenium Manager must never fetch a driver
    os.environ["SE_AVOID_STATS"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    web.downloads.mkdir(parents=True, exist_ok=True)
    opts.add_experimental_option("prefs", {"download.default_directory": str(web.downloads),
                                           "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_window_size(1280, 900)
    # Headless Chromium drops downloads unless told where to put them.
    drv.execute_cdp_cmd("Browser.setDownloadBehavior",
                        {"behavior": "allow", "downloadPath": str(web.downloads)})
    try:
        yield drv
    finally:
        drv.quit()


def _text(drv, css: str) -> str:
    from selenium.webdriver.common.by import By

    return drv.find_element(By.CSS_SELECTOR, css).text.strip()


def _shot(drv, web: Site, name: str) -> None:
    """Desktop and phone renderings of the page; at phone width nothing may stick out."""
    for width, suffix in ((1280, ""), (390, "-dien-thoai")):
        drv.set_window_size(width, 900)
        time.sleep(0.2)
        if width == 390:
            overflow = drv.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
        height = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(width, min(max(height + 140, 900), 6000))  # the whole page
        drv.save_screenshot(str(web.shots / f"{name}{suffix}.png"))
    drv.set_window_size(1280, 900)
    assert overflow <= 1, f"{name}: {overflow}px wider than a phone screen"


def _go(drv, element) -> None:
    """Click a link or a submit button and wait for the next page to be loaded."""
    before = drv.current_url
    old = drv.find_element("tag name", "html")
    element.click()

    def loaded() -> bool:
        try:
            old.tag_name  # noqa: B018  (raises once the old page is gone)
            return False
        except Exception:
            return drv.execute_script("return document.readyState") == "complete"

    wait_for(loaded, 30, f"the page after {before}", interval=0.1)


def _download_xlsx(drv, web: Site, form: str, name: str) -> set[str]:
    """Submit a report form as XLSX; the text of every cell of the file the browser saved."""
    from openpyxl import load_workbook
    from selenium.webdriver.common.by import By

    drv.find_element(By.CSS_SELECTOR, f'{form} option[value="xlsx"]').click()
    drv.find_element(By.CSS_SELECTOR, f"{form} button").click()
    path = web.downloads / name
    wait_for(path.exists, 60, f"the download of {name}", interval=0.5)
    return {str(c.value) for ws in load_workbook(path).worksheets for row in ws.iter_rows()
            for c in row if c.value is not None}


def _login(drv, web: Site) -> None:
    from selenium.webdriver.common.by import By

    drv.get(f"{web.url}/")
    assert "/dang-nhap" in drv.current_url
    _shot(drv, web, "dang-nhap")
    drv.find_element(By.NAME, "ten").send_keys(USER)
    drv.find_element(By.NAME, "mat-khau").send_keys(PASSWORD)
    _go(drv, drv.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    assert "/dang-nhap" not in drv.current_url


def test_every_page_shows_the_campaign_as_the_events_give_it(web: Site, browser) -> None:
    from selenium.webdriver.common.by import By

    drv, s = browser, web.seeded
    _login(drv, web)

    # --- overview: units, sites by their plan names, totals over the plan's sites only -----
    assert drv.title.startswith("Tổng quan")
    planned = list(PLAN)
    scanned = sum(s.pages.get(x, 0) for x in planned)
    target = sum(s.target(x) for x in planned)
    assert _text(drv, "#tong-da-quet") == vn(scanned)
    assert _text(drv, "#tong-ke-hoach") == vn(target)
    assert _text(drv, "#tong-ty-le") == f"{vn1(100 * scanned / target)} %"
    assert _text(drv, "#tong-dat") == vn(sum(s.accepted.get(x, 0) for x in planned))
    for unit in {p[1] for p in PLAN.values()}:
        box = drv.find_element(By.CSS_SELECTOR, f'section[data-unit="{unit}"]')
        sites = [x for x, p in PLAN.items() if p[1] == unit]
        assert box.find_element(By.CSS_SELECTOR, ".u-da-quet").text == vn(
            sum(s.pages.get(x, 0) for x in sites))
        assert box.find_element(By.CSS_SELECTOR, ".u-ke-hoach").text == vn(
            sum(s.target(x) for x in sites))
    for site, (name, *_rest) in PLAN.items():
        row = drv.find_element(By.CSS_SELECTOR, f'tr[data-site="{site}"]')
        assert row.find_element(By.CSS_SELECTOR, "td a").text == name
        assert row.find_element(By.CSS_SELECTOR, ".da-quet").text == vn(s.pages.get(site, 0))
        assert row.find_element(By.CSS_SELECTOR, ".dat").text == vn(s.accepted.get(site, 0))
        assert row.find_element(By.CSS_SELECTOR, ".han").text == f"{s.deadline(site):%d/%m/%Y}"
        assert site not in row.text  # the plan's name, never the slug
    late_row = drv.find_element(By.CSS_SELECTOR, 'tr[data-site="xa-0001"]')
    assert late_row.find_element(By.CSS_SELECTOR, ".danh-gia").text == "chậm tiến độ"
    outside = drv.find_element(By.ID, "ngoai-ke-hoach").text
    assert f"{UNPLANNED}: {vn(s.pages[UNPLANNED])} trang" in outside
    _shot(drv, web, "tong-quan")

    # --- sites behind schedule: the pages per working day the deadline now needs ---------
    _go(drv, drv.find_element(By.LINK_TEXT, "Điểm chậm tiến độ"))
    rows = drv.find_elements(By.CSS_SELECTOR, "#cham tbody tr")
    assert [r.get_attribute("data-site") for r in rows] == ["xa-0001"]
    remaining = s.target("xa-0001") - s.pages["xa-0001"]
    days_left = working_days(s.today, s.deadline("xa-0001"))
    row = rows[0]
    assert row.find_element(By.CSS_SELECTOR, "td a").text == "Xã Phú Lâm"
    assert row.find_element(By.CSS_SELECTOR, ".con-lai").text == vn(remaining)
    assert row.find_element(By.CSS_SELECTOR, ".ngay-con-lai").text == vn(days_left)
    assert row.find_element(By.CSS_SELECTOR, ".can").text == vn1(remaining / days_left)
    _shot(drv, web, "cham-tien-do")

    # --- a site: its files, rescan lists with reasons in Vietnamese ------------------------
    _go(drv, row.find_element(By.CSS_SELECTOR, "td a"))
    assert _text(drv, "h1") == "Xã Phú Lâm"
    assert _text(drv, "#da-quet") == vn(s.pages["xa-0001"])
    _shot(drv, web, "diem-xa-phu-lam")
    drv.get(f"{web.url}/diem/{RESCAN_SITE}")
    assert _text(drv, "h1") == PLAN[RESCAN_SITE][0]
    files = {r.get_attribute("data-file"): r
             for r in drv.find_elements(By.CSS_SELECTOR, "#ho-so-list tbody tr")}
    assert set(files) == {f"{f}/{c}" for f, c in s.file_keys[RESCAN_SITE]}
    rescan = files["UBND-DQ/HS-QL-01"].find_element(By.CSS_SELECTOR, ".ly-do").text
    for sentence in ("độ phân giải 150 dpi, dưới mức tối thiểu 200 dpi",
                     "nghiêng 5,2° (cho phép tối đa 3°)", "số trang 5: thiếu trang",
                     "cả hồ sơ: có 4 trang, danh mục hồ sơ ghi 5 trang"):
        assert sentence in rescan, rescan
    assert files["UBND-DQ/HS-QL-01"].find_element(By.CSS_SELECTOR, ".trang-thai").text == \
        "cần quét lại"
    rejected = files["UBND-DQ/HS-QL-02"]
    assert rejected.find_element(By.CSS_SELECTOR, ".trang-thai").text == "không đạt"
    assert "3/4 trang không đạt: làm lại cả hồ sơ" in rejected.text
    body = drv.find_element(By.TAG_NAME, "main").text
    for english in ("required", "skew_deg", "missing_page", "needs_rescan"):
        assert english not in body
    _shot(drv, web, "diem-ho-so")
    # Only the files needing a rescan, by the state filter.
    _go(drv, drv.find_element(By.CSS_SELECTOR, '.chips a[data-state="needs_rescan"]'))
    shown = [r.get_attribute("data-file")
             for r in drv.find_elements(By.CSS_SELECTOR, "#ho-so-list tbody tr")]
    expected = sorted(f"{f}/{c}" for (f, c), v in s.files[RESCAN_SITE].items()
                      if v == "needs_rescan")
    assert sorted(shown) == expected
    _shot(drv, web, "diem-can-quet-lai")

    # --- a file: failed pages before any verdict -----------------------------------------
    drv.get(f"{web.url}/diem/{RESCAN_SITE}/ho-so?phong=UBND-DQ&ma=HS-QL-03")
    assert _text(drv, "#trang-thai") == "đã kiểm tra"
    assert "văn bản 001.tif, trang 1: trang trắng" in _text(drv, "#trang-loi")
    _shot(drv, web, "ho-so")

    # --- lookup by fonds and file code -----------------------------------------------------
    _go(drv, drv.find_element(By.LINK_TEXT, "Tra cứu hồ sơ"))
    drv.find_element(By.NAME, "ma").send_keys("hs-ql")
    _go(drv, drv.find_element(By.CSS_SELECTOR, "main form button"))
    found = [r.get_attribute("data-file")
             for r in drv.find_elements(By.CSS_SELECTOR, "#ket-qua tbody tr")]
    assert sorted(found) == [f"{RESCAN_SITE}/UBND-DQ/HS-QL-0{i}" for i in (1, 2, 3)]
    _shot(drv, web, "tra-cuu")
    drv.get(f"{web.url}/tra-cuu?phong=ubnd&ma=HS-00001")
    synth = [r.get_attribute("data-file")
             for r in drv.find_elements(By.CSS_SELECTOR, "#ket-qua tbody tr")]
    assert sorted(synth) == [f"xa-000{i}/UBND/HS-00001" for i in range(4)]
    drv.get(f"{web.url}/tra-cuu?ma=KHONG-CO")
    assert "Không tìm thấy hồ sơ nào" in _text(drv, "#so-ket-qua")

    # --- reports: downloads of what `sohoa report` writes ---------------------------------
    _go(drv, drv.find_element(By.LINK_TEXT, "Báo cáo"))
    assert drv.title.startswith("Báo cáo — ")
    _shot(drv, web, "bao-cao")
    month = f"{s.today:%m/%Y}"
    drv.find_element(By.CSS_SELECTOR, f'#bao-cao-thang option[value="{month}"]').click()
    cells = _download_xlsx(drv, web, "#bao-cao-thang", f"bao-cao-tien-do-{s.today:%Y-%m}.xlsx")
    assert f"tháng {month}" in " ".join(cells)
    for name, *_rest in PLAN.values():
        assert name in cells, name  # the plan's names, as on the page
    # The budget estimate of the remaining work, per unit and site.
    cells = _download_xlsx(drv, web, "#du-toan", f"du-toan-kinh-phi-{s.today:%Y%m%d}.xlsx")
    assert "Xã Phú Lâm" in cells

    # --- the runbook the alerts link to -------------------------------------------------------
    drv.get(f"{web.url}/so-tay#sohoasitestalled")
    assert drv.find_element(By.ID, "sohoasitestalled").text == "SohoaSiteStalled"
    _shot(drv, web, "so-tay")


def test_a_report_request_with_a_wrong_name_is_refused_with_the_known_ones(
        web: Site, browser) -> None:
    from selenium.webdriver.common.by import By

    drv = browser
    drv.get(f"{web.url}/bao-cao/nghiem-thu?nha-thau=Cty+Kh%C3%B4ng&tu=01/01/2026&den=31/01/2026")
    if "/dang-nhap" in drv.current_url:
        _login(drv, web)
        drv.get(f"{web.url}/bao-cao/nghiem-thu?nha-thau=Cty+Kh%C3%B4ng&tu=01/01/2026"
                "&den=31/01/2026")
    text = drv.find_element(By.TAG_NAME, "main").text
    assert "không có nhà thầu 'Cty Không'" in text
    assert "Cty Số Việt" in text and "Cty Lưu Trữ Đông Nam" in text
