"""Builds the two Grafana boards (JSON) of sohoa from one description, in Vietnamese.

    python monitoring/grafana/build_dashboards.py        # rewrites monitoring/grafana/dashboards/

The JSON files are committed (Grafana provisions them as they are);
tests/monitoring/test_boards.py checks they match this script and sends every panel query to a
real Prometheus and PostgreSQL.
Prometheus panels use the metrics of docs/architecture.md and the recording rules of
monitoring/prometheus/rules/recording.yml; SQL panels read only the consumer's views (v_*) and
plan tables, as the read-only role sohoa_reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROM = {"type": "prometheus", "uid": "sohoa-prometheus"}
PG = {"type": "grafana-postgresql-datasource", "uid": "sohoa-postgres"}
OUT = Path(__file__).resolve().parent / "dashboards"
# monitoring.runbook_base_url's default (sohoa/config.py MonitoringConfig): the runbook that
# `sohoa web` serves on this machine.
DEFAULT_RUNBOOK = "http://127.0.0.1:18080/so-tay"


def prom(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A",
         table: bool = False) -> dict:
    t = {"refId": ref, "datasource": PROM, "expr": expr, "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant, "editorMode": "code"}
    if table:
        t["format"] = "table"
    return t


def sql(raw: str, *, fmt: str = "table", ref: str = "A") -> dict:
    return {"refId": ref, "datasource": PG, "rawSql": " ".join(raw.split()), "format": fmt,
            "rawQuery": True, "editorMode": "code"}


class Board:
    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.row_h = 0

    def add(self, kind: str, title: str, targets: list[dict], *, w: int, h: int,
            unit: str | None = None, description: str = "", options: dict | None = None,
            defaults: dict | None = None, transformations: list[dict] | None = None) -> None:
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        ds = targets[0]["datasource"]
        fdefaults: dict[str, Any] = {**(defaults or {})}
        if unit:
            fdefaults["unit"] = unit
        self.panels.append({
            "id": len(self.panels) + 1, "type": kind, "title": title,
            "description": description, "datasource": ds,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": targets,
            "fieldConfig": {"defaults": fdefaults, "overrides": []},
            "options": options or {},
            **({"transformations": transformations} if transformations else {}),
        })
        self.x += w
        self.row_h = max(self.row_h, h)


def _stat_opts(color_mode: str = "value") -> dict:
    return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": color_mode, "graphMode": "none", "textMode": "auto",
            "justifyMode": "auto", "orientation": "auto"}


def _thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"thresholds": {"mode": "absolute",
                           "steps": [{"value": v, "color": c} for v, c in steps]}}


# Plan line: from the campaign start (0 pages) straight to the target on the deadline day.
_PLAN_LINE = """
WITH plan AS (
  SELECT s.site_id, s.target_pages, s.deadline,
         COALESCE(c.start_date, (SELECT min(day) FROM v_daily_progress), current_date) AS start_date
  FROM sites s LEFT JOIN campaigns c ON c.campaign_id = s.campaign_id
  WHERE s.target_pages IS NOT NULL AND s.deadline IS NOT NULL {site_filter}
)
SELECT d::date::timestamptz AS time, {plan_metric} AS metric,
       sum(p.target_pages * LEAST(1.0, GREATEST(0.0,
           (d::date - p.start_date)::float8 / GREATEST(1, p.deadline - p.start_date)))) AS value
FROM plan p CROSS JOIN LATERAL generate_series(p.start_date::timestamp, p.deadline::timestamp,
                                              interval '1 day') d
WHERE $__timeFilter(d)
GROUP BY 1, 2
UNION ALL
SELECT day::timestamptz AS time, {actual_metric} AS metric,
       sum(pages_scanned_cumulative)::float8 AS value
FROM v_daily_progress
WHERE $__timeFilter(day) {site_filter_v}
GROUP BY 1, 2
ORDER BY 1, 2
"""


def province(runbook_url: str) -> dict:
    b = Board()
    b.add("stat", "Trang đã quét", [prom("sohoa:pages_scanned:sum", instant=True)],
          w=4, h=4, unit="short", options=_stat_opts("none"),
          description="Tổng số trang đã quét (trang hiện hành, không tính trang đã xóa).")
    b.add("stat", "Kế hoạch (trang)", [prom("sohoa:site_target_pages:sum", instant=True)],
          w=4, h=4, unit="short", options=_stat_opts("none"))
    b.add("gauge", "Hoàn thành toàn tỉnh", [prom("sohoa:campaign_completion:ratio",
                                                 instant=True)],
          w=4, h=4, unit="percentunit",
          defaults={"min": 0, "max": 1, **_thresholds((None, "red"), (0.5, "orange"),
                                                       (0.9, "green"))})
    b.add("stat", "Trang đạt (đã kết luận)", [prom("sohoa:pages_accepted:sum", instant=True)],
          w=4, h=4, unit="short", options=_stat_opts("none"),
          description="Trang thuộc hồ sơ đã kiểm tra đạt: khối lượng có thể nghiệm thu.")
    b.add("stat", "Điểm ngừng quét", [prom(
        'count(ALERTS{alertname="SohoaSiteStalled",alertstate="firing"}) or on() vector(0)',
        instant=True)], w=2, h=4, options=_stat_opts("background"),
        defaults=_thresholds((None, "green"), (1, "red")))
    b.add("stat", "Điểm mất kết nối", [prom(
        'count(ALERTS{alertname=~"SohoaSiteOffline|SohoaSiteAgentDown",alertstate="firing"})'
        ' or on() vector(0)', instant=True)], w=2, h=4, options=_stat_opts("background"),
        defaults=_thresholds((None, "green"), (1, "red")))
    b.add("stat", "Điểm chậm so với hạn", [prom("sum(sohoa_site_behind_schedule)",
                                                instant=True)],
          w=4, h=4, options=_stat_opts("background"),
          defaults=_thresholds((None, "green"), (1, "orange")),
          description="Số điểm có ngày dự kiến hoàn thành sau hạn.")

    b.add("bargauge", "Hoàn thành theo điểm", [prom(
        "sort_desc(sohoa:site_completion:ratio)", "{{site}}", instant=True)],
        w=12, h=10, unit="percentunit",
        options={"orientation": "horizontal", "displayMode": "gradient",
                 "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        defaults={"min": 0, "max": 1, **_thresholds((None, "red"), (0.5, "orange"),
                                                     (0.9, "green"))})
    b.add("timeseries", "Tiến độ cộng dồn so với đường kế hoạch tới hạn", [sql(
        _PLAN_LINE.format(site_filter="", site_filter_v="",
                          plan_metric="p.site_id || ' — kế hoạch'", actual_metric="site_id"),
        fmt="time_series")], w=12, h=10, unit="short",
        description="Đường liền: trang đã quét cộng dồn; đường '— kế hoạch': từ ngày bắt đầu "
                    "chiến dịch tới khối lượng kế hoạch vào ngày hạn của từng điểm.")

    # The sites the forecast puts past their deadline, with the pace each now needs: one row
    # per site, the four queries joined on the site label.
    late = "on (site) max by (site) (sohoa_site_behind_schedule) == 1"
    b.add("table", "Điểm cần chú ý (dự kiến không kịp hạn)", [
        prom("max by (site) (sohoa_site_remaining_pages) * on (site) group_left (name, unit) "
             f"sohoa:site_unit:info and {late}", instant=True, table=True, ref="A"),
        prom(f"max by (site) (sohoa_site_working_days_left) and {late}", instant=True,
             table=True, ref="B"),
        prom(f"max by (site) (sohoa_site_required_pages_per_day) and {late}", instant=True,
             table=True, ref="C"),
        prom(f"max by (site) (sohoa_site_throughput_pages_per_day) and {late}", instant=True,
             table=True, ref="D"),
    ], w=24, h=8, options={"sortBy": [{"displayName": "Cần (trang/ngày)", "desc": True}]},
        description="Điểm có ngày dự kiến hoàn thành sau hạn (hoặc ngừng quét khi còn trang): "
                    "số trang còn lại, số ngày làm việc đến hạn, số trang mỗi ngày làm việc "
                    "cần đạt để kịp hạn và tốc độ hiện nay. Điểm đã quá hạn không có cột "
                    "\"Cần\".",
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True},
                "indexByName": {"name": 0, "site": 1, "unit": 2, "Value #A": 3,
                                "Value #B": 4, "Value #C": 5, "Value #D": 6},
                "renameByName": {"name": "Điểm", "site": "Mã điểm", "unit": "Đơn vị",
                                 "Value #A": "Còn lại (trang)",
                                 "Value #B": "Ngày làm việc còn lại",
                                 "Value #C": "Cần (trang/ngày)",
                                 "Value #D": "Tốc độ hiện nay (trang/ngày)"}}}])

    b.add("table", "Tất cả các điểm", [sql("""
        SELECT v.site_id AS "Điểm", v.unit AS "Đơn vị", v.contractor AS "Nhà thầu",
               v.pages_scanned AS "Đã quét", v.target_pages AS "Kế hoạch",
               round(100.0 * v.pages_scanned / NULLIF(v.target_pages, 0), 1) AS "Hoàn thành %",
               v.deadline AS "Hạn", v.last_page_at AS "Trang gần nhất",
               v.last_heartbeat_at AS "Tín hiệu sống gần nhất",
               v.outbox_depth AS "Hàng đợi gửi",
               round(100.0 * v.qc_failed_pages / NULLIF(v.pages_scanned, 0), 1)
                   AS "Lỗi QC %"
        FROM v_site_progress v
        ORDER BY v.pages_scanned::float8 / NULLIF(v.target_pages, 0) NULLS FIRST, v.site_id
        """)], w=24, h=9,
        description="Mọi điểm, tỷ lệ hoàn thành thấp nhất trước.")

    b.add("table", "Bàn giao cho Lưu trữ lịch sử", [sql("""
        SELECT d.site_id AS "Điểm", p.unit AS "Đơn vị", p.files_accepted AS "Hồ sơ nghiệm thu",
               d.files_packaged AS "Đã đóng gói", d.files_handed_over AS "Đã bàn giao",
               d.files_verified AS "Kiểm tra đạt", d.files_verify_failed AS "Kiểm tra lỗi",
               d.pages_verified AS "Trang đã bàn giao đạt"
        FROM v_site_deliverables d JOIN v_site_progress p USING (site_id)
        ORDER BY p.unit NULLS LAST, d.site_id
        """)], w=24, h=7,
        description="Gói AIP/SIP của hồ sơ đã nghiệm thu (sohoa package build), đã bàn giao "
                    "(sohoa handover build) và đã được bên nhận kiểm tra (sohoa handover "
                    "verify).")

    b.add("timeseries", "Tỷ lệ trang không đạt QC theo điểm", [prom(
        "sohoa:site_qc_failed:ratio", "{{site}}")], w=8, h=8, unit="percentunit")
    b.add("timeseries", "Hàng chờ OCR (hồ sơ đã ghép, chưa OCR)", [prom(
        'sum by (site) (sohoa_files{state=~"assembled|checked"})', "{{site}}")],
        w=8, h=8, unit="short",
        description="Hồ sơ đã ghép đủ trang (và kiểm tra trang) nhưng chưa có kết quả OCR.")
    b.add("barchart", "Trang quét mỗi ngày làm việc", [sql("""
        SELECT day::timestamptz AS time, sum(pages_scanned) AS "Trang quét",
               sum(pages_accepted) AS "Trang đạt"
        FROM v_daily_progress WHERE $__timeFilter(day)
        GROUP BY day ORDER BY day
        """, fmt="time_series")], w=8, h=8, unit="short",
        options={"xTickLabelRotation": -45, "stacking": "none"})
    return _dashboard("sohoa-tinh", "Tiến độ số hóa toàn tỉnh", b.panels, variables=[],
                      time_from="now-30d", time_to="now+30d", runbook_url=runbook_url)


def site_detail(runbook_url: str) -> dict:
    b = Board()
    s = '{site="$site"}'
    b.add("stat", "Trang đã quét", [prom(f"sohoa_site_pages_scanned{s}", instant=True)],
          w=4, h=4, unit="short", options=_stat_opts("none"))
    b.add("stat", "Kế hoạch (trang)", [prom(f"sohoa_site_target_pages{s}", instant=True)],
          w=4, h=4, unit="short", options=_stat_opts("none"))
    b.add("gauge", "Hoàn thành", [prom(f"sohoa:site_completion:ratio{s}", instant=True)],
          w=4, h=4, unit="percentunit", defaults={"min": 0, "max": 1})
    b.add("stat", "Dự kiến hoàn thành", [prom(
        f"sohoa_site_forecast_completion_timestamp_seconds{s} * 1000", instant=True)],
        w=4, h=4, unit="dateTimeAsLocalNoDateIfToday", options=_stat_opts("none"),
        description="Theo tốc độ trung bình các ngày làm việc gần đây.")
    b.add("stat", "Hạn hoàn thành", [prom(
        f"sohoa_site_deadline_timestamp_seconds{s} * 1000", instant=True)],
        w=4, h=4, unit="dateTimeAsLocalNoDateIfToday", options=_stat_opts("none"))
    b.add("stat", "Tốc độ (trang/ngày làm việc)", [prom(
        f"sohoa_site_throughput_pages_per_day{s}", instant=True)],
        w=4, h=4, unit="short", options=_stat_opts("none"))
    b.add("stat", "Cần để kịp hạn (trang/ngày làm việc)", [prom(
        f"sohoa_site_required_pages_per_day{s}", instant=True)],
        w=12, h=4, unit="short", options=_stat_opts("background"),
        defaults={"decimals": 1},
        description="Số trang còn lại chia cho số ngày làm việc từ hôm nay đến hết ngày hạn "
                    "(không tính ngày nghỉ, ngày lễ, ngày nghỉ bù; tính ngày làm bù). So với "
                    "ô \"Tốc độ\": nếu cần nhiều hơn tốc độ hiện nay, điểm sẽ chậm hạn. "
                    "Trống khi đã quá hạn.")
    b.add("stat", "Ngày làm việc còn lại đến hạn", [prom(
        f"sohoa_site_working_days_left{s}", instant=True)],
        w=12, h=4, unit="short", options=_stat_opts("background"),
        defaults=_thresholds((None, "red"), (1, "orange"), (21, "green")),
        description="Từ 20 ngày làm việc trở xuống, cảnh báo chậm tiến độ của điểm là khẩn.")

    b.add("barchart", "Trang quét theo ngày", [sql("""
        SELECT day::timestamptz AS time, pages_scanned AS "Trang quét",
               pages_accepted AS "Trang đạt"
        FROM v_daily_progress WHERE site_id = '$site' AND $__timeFilter(day) ORDER BY day
        """, fmt="time_series")], w=12, h=9, unit="short", options={"xTickLabelRotation": -45})
    b.add("timeseries", "Tiến độ cộng dồn và đường kế hoạch", [sql(
        _PLAN_LINE.format(site_filter="AND s.site_id = '$site'",
                          site_filter_v="AND site_id = '$site'",
                          plan_metric="'Kế hoạch'", actual_metric="'Đã quét'"),
        fmt="time_series")], w=12, h=9, unit="short")

    b.add("piechart", "Hồ sơ theo trạng thái", [sql("""
        SELECT CASE state WHEN 'scanning' THEN 'đang quét' WHEN 'closed' THEN 'đã đóng'
                          WHEN 'assembled' THEN 'đã ghép' WHEN 'checked' THEN 'đã kiểm tra trang'
                          WHEN 'ocr_done' THEN 'đã OCR' WHEN 'ocr_failed' THEN 'OCR lỗi'
                          WHEN 'accepted' THEN 'đạt' WHEN 'needs_rescan' THEN 'cần quét lại'
                          WHEN 'rejected' THEN 'không đạt' ELSE state END AS metric,
               files AS value
        FROM v_files_by_state WHERE site_id = '$site' ORDER BY files DESC
        """)], w=8, h=9,
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                 "legend": {"displayMode": "table", "placement": "right",
                            "values": ["value"]}})
    b.add("table", "Lý do quét lại", [sql("""
        SELECT split_part(reason, ':', 1) AS "Lý do", sum(occurrences) AS "Số trang/hồ sơ",
               max(occurred_at) AS "Gần nhất"
        FROM v_rescan_reasons WHERE site_id = '$site' AND $__timeFilter(occurred_at)
        GROUP BY 1 ORDER BY 2 DESC LIMIT 20
        """)], w=8, h=9,
        description="dpi: độ phân giải; colour: không phải ảnh màu; blank: trang trắng; "
                    "skew_deg: nghiêng; sharpness: mờ; missing_page: thiếu trang.")
    b.add("table", "Tình trạng máy trạm", [sql("""
        SELECT v.agent_version AS "Phiên bản", v.last_heartbeat_at AS "Tín hiệu sống gần nhất",
               v.outbox_depth AS "Hàng đợi gửi",
               round(v.oldest_unsent_age_s::numeric / 60, 1) AS "Chờ lâu nhất (phút)",
               h.upload_pending_pages AS "Trang chờ tải lên",
               round(h.upload_pending_bytes::numeric / 1e6, 1) AS "Chờ tải lên (MB)",
               round(h.oldest_unuploaded_age_s::numeric / 60, 1) AS "Chờ tải lâu nhất (phút)",
               h.upload_error AS "Lỗi tải lên",
               v.last_page_at AS "Trang gần nhất"
        FROM v_site_progress v LEFT JOIN site_heartbeats h USING (site_id)
        WHERE v.site_id = '$site'
        """)], w=8, h=9)

    b.add("timeseries", "Hàng đợi gửi (outbox)", [
        prom(f"sohoa:site_outbox_depth:max{s}", "sự kiện chờ gửi"),
        prom(f"sohoa:site_upload_pending:pages{s}", "trang chờ tải lên kho", ref="B"),
    ], w=8, h=8, unit="short",
        description="Sự kiện chờ gửi về Kafka; trong đó các trang chờ tệp của chúng được tải "
                    "lên kho lưu trữ (S3) trước.")
    b.add("timeseries", "Trang chờ gửi lâu nhất", [
        prom(f"sohoa:site_oldest_unsent:seconds{s}", "chờ gửi lâu nhất"),
        prom(f"sohoa:site_oldest_unuploaded:seconds{s}", "chờ tải lên lâu nhất", ref="B"),
    ], w=8, h=8, unit="s")
    b.add("timeseries", "Sức khỏe máy trạm", [
        prom(f"sohoa:site_heartbeat_age:seconds{s}", "từ tín hiệu sống gần nhất"),
        prom(f"sohoa:site_idle:seconds{s}", "từ trang gần nhất", ref="B"),
    ], w=8, h=8, unit="s",
        description="Thời gian kể từ tín hiệu sống và trang gần nhất; ngừng quét khi vượt 2 "
                    "giờ trong giờ làm việc.")
    variables = [{
        "name": "site", "label": "Điểm số hóa", "type": "query", "datasource": PROM,
        "query": {"query": "label_values(sohoa_site_pages_scanned, site)",
                  "refId": "site"},
        "definition": "label_values(sohoa_site_pages_scanned, site)",
        "refresh": 2, "sort": 1, "includeAll": False, "multi": False,
    }]
    return _dashboard("sohoa-diem", "Chi tiết điểm số hóa", b.panels, variables=variables,
                      time_from="now-30d", time_to="now+30d", runbook_url=runbook_url)


def _dashboard(uid: str, title: str, panels: list[dict], *, variables: list[dict],
               time_from: str, time_to: str, runbook_url: str) -> dict:
    return {
        "uid": uid, "title": title, "tags": ["sohoa"], "timezone": "Asia/Ho_Chi_Minh",
        "editable": True, "schemaVersion": 39, "version": 1, "refresh": "1m",
        "time": {"from": time_from, "to": time_to},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [{"title": "Sổ tay cảnh báo", "type": "link", "url": runbook_url,
                   "targetBlank": True}],
        "panels": panels,
    }


BOARDS = {"tien-do-toan-tinh.json": province, "chi-tiet-diem.json": site_detail}


def render(runbook_url: str = DEFAULT_RUNBOOK) -> dict[str, str]:
    """The boards as JSON; their link to the runbook is ``runbook_url`` (absolute: Grafana
    runs elsewhere than `sohoa web`). The committed files use the default; `sohoa monitoring
    build` renders them with ``monitoring.runbook_base_url``."""
    return {name: json.dumps(fn(runbook_url), ensure_ascii=False, indent=2) + "\n"
            for name, fn in BOARDS.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(OUT / name)


if __name__ == "__main__":
    main()
