"""Proof that the Grafana boards work and the alerts fire for the right sites.

`sohoa simulate` drives the real pipeline (Kafka → `sohoa consume` → PostgreSQL); a real
Prometheus (/usr/bin/prometheus) scrapes the consumer with the project's recording and alert
rules. Every Prometheus panel query of both boards goes to Prometheus's HTTP API and every SQL
panel query goes to PostgreSQL as the read-only role sohoa_reader; any error or empty result
fails. Then the alerts firing in Prometheus must be exactly: stalled for the stalled site,
offline for the offline site, behind schedule for the late site.

Two things differ from production, on purpose and only here: the sites' calendar is "every
day, all day" (so the working-hours gates are open whenever the test runs; the gates are
tested by promtool in test_alerts.py), and the alert rules' `for:` pending durations are set
to 0s (a test cannot wait 15 minutes; the expressions are the production ones).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.procs import free_port
from tests.support.monitoring_helpers import load_builder
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.progress_store import scalar

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "monitoring" / "grafana"
RULES = ROOT / "monitoring" / "prometheus" / "rules"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
BOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SITE_ALERTS = ("SohoaSiteStalled", "SohoaSiteAgentDown", "SohoaSiteOffline",
               "SohoaSiteBehindSchedule")


def _boards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in BOARDS}


def _targets(board: dict) -> list[tuple[dict, dict]]:
    return [(panel, t) for panel in board["panels"] for t in panel["targets"]]


# --- static checks --------------------------------------------------------------------------


def test_dashboards_are_built_from_the_script() -> None:
    rendered = load_builder().render()
    assert sorted(rendered) == [p.name for p in BOARDS]
    for path in BOARDS:
        assert path.read_text(encoding="utf-8") == rendered[path.name], (
            f"{path.name} is stale: run python monitoring/grafana/build_dashboards.py")


def test_boards_use_the_provisioned_datasources_and_speak_vietnamese() -> None:
    prov = (GRAFANA / "provisioning" / "datasources" / "sohoa.yml").read_text(encoding="utf-8")
    uids = dict(re.findall(r"uid: (\S+)\n\s+type: (\S+)", prov))
    assert uids == {"sohoa-prometheus": "prometheus",
                    "sohoa-postgres": "grafana-postgresql-datasource"}
    assert "user: sohoa_reader" in prov
    titles = {b["title"] for b in _boards().values()}
    assert titles == {"Tiến độ số hóa toàn tỉnh", "Chi tiết điểm số hóa"}
    for board in _boards().values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel, t in _targets(board):
            assert uids[t["datasource"]["uid"]] == t["datasource"]["type"], panel["title"]
            assert ("expr" in t) != ("rawSql" in t), panel["title"]
            assert not re.search(r"\b(INSERT|UPDATE|DELETE|DROP|ALTER)\b", t.get("rawSql", ""))
    detail = _boards()["chi-tiet-diem.json"]
    assert [v["name"] for v in detail["templating"]["list"]] == ["site"]
    dash_prov = (GRAFANA / "provisioning" / "dashboards" / "sohoa.yml").read_text("utf-8")
    assert "type: file" in dash_prov


# --- against the real stack -----------------------------------------------------------------


def _missing_consumer_pieces() -> str | None:
    try:
        import consumers.cli as ccli
    except ImportError as exc:
        return f"consumers/cli.py not importable ({exc})"
    needed = {"consume": "sohoa consume", "db": "sohoa db migrate",
              "campaign": "sohoa campaign import"}
    missing = [cmd for attr, cmd in needed.items() if not hasattr(ccli, attr)]
    return f"missing consumer commands: {', '.join(missing)}" if missing else None


def _vn_holiday_today() -> str | None:
    from zoneinfo import ZoneInfo

    import holidays

    today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    return holidays.country_holidays("VN", years=today.year).get(today)


@dataclass
class Run:
    prom_url: str
    reader_dsn: str
    owner_dsn: str
    summary: dict[str, Any]
    roles: dict[str, str]


def _get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _prom_query(run: Run, expr: str, *, instant: bool) -> dict:
    if instant:
        qs = urllib.parse.urlencode({"query": expr, "time": time.time()})
        return _get(f"{run.prom_url}/api/v1/query?{qs}")
    end = time.time()
    qs = urllib.parse.urlencode({"query": expr, "start": end - 120, "end": end, "step": 5})
    return _get(f"{run.prom_url}/api/v1/query_range?{qs}")


def _firing(run: Run) -> set[tuple[str, str]]:
    alerts = _get(f"{run.prom_url}/api/v1/alerts")["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("site", ""))
            for a in alerts if a["state"] == "firing"}


@pytest.fixture(scope="module")
def run(stack, tmp_path_factory) -> Any:
    missing = _missing_consumer_pieces()
    if missing:
        pytest.skip(f"the board test needs the progress store: {missing}")
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus not installed (/usr/bin/prometheus)")
    tmp = tmp_path_factory.mktemp("boards")
    owner_dsn = stack.new_database("boards")
    reader_dsn = re.sub(r"^(postgresql://)[^@/]*@", r"\1sohoa_reader@", owner_dsn)
    topics = stack.new_topics()
    metrics_port = free_port()
    env = {
        **stack.env,
        "SOHOA_POSTGRES__DSN": owner_dsn, "SOHOA_POSTGRES__READER_DSN": reader_dsn,
        "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
        "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
        "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "SOHOA_CONSUMER__GROUP_ID": f"boards-{topics.site_events[-10:]}",
        "SOHOA_CONSUMER__METRICS_PORT": str(metrics_port),
        "SOHOA_CONSUMER__GAUGE_CACHE_S": "1",
        # Every day, all day: the working-hours gates are open whenever the test runs.
        "SOHOA_CAMPAIGN__WORKDAYS": "[0,1,2,3,4,5,6]",
        "SOHOA_CAMPAIGN__WORK_START": "00:00:00", "SOHOA_CAMPAIGN__WORK_END": "23:59:59",
        "SOHOA_CAMPAIGN__LUNCH_START": "12:00:00", "SOHOA_CAMPAIGN__LUNCH_END": "12:00:00",
        "SOHOA_LOGGING__JSON": "false",
    }
    res = run_sohoa(["db", "migrate"], env)
    assert res.returncode == 0, res.stderr
    # The simulation writes only its own topics and database (simulate.*); this test's
    # consumer reads exactly those, as the pipeline of a demo would.
    sim_env = {**env, **{k: v for k, v in stack.env.items()
                         if k.startswith("SOHOA_TOPICS__") or k == "SOHOA_POSTGRES__DSN"},
               "SOHOA_SIMULATE__TOPICS__SITE_EVENTS": topics.site_events,
               "SOHOA_SIMULATE__TOPICS__FILE_EVENTS": topics.file_events,
               "SOHOA_SIMULATE__TOPICS__DEAD_LETTERS": topics.dead_letters,
               "SOHOA_SIMULATE__POSTGRES_DSN": owner_dsn}
    res = run_sohoa(["simulate", "--sites", "7", "--days", "10", "--pages-per-day", "120",
                     "--scenario", "boards", "--seed", "5", "--plan-out",
                     str(tmp / "plan.csv"), "--json"], sim_env, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    roles = {s["role"]: s["site_id"] for s in summary["sites"]}

    consumer = SohoaProcess(["consume"], env, tmp / "consume.log")
    prom_proc: subprocess.Popen | None = None
    prom_log = (tmp / "prometheus.log").open("wb")
    try:
        import psycopg

        pages = sum(s["pages_sent"] for s in summary["sites"])

        def caught_up() -> bool:
            with psycopg.connect(owner_dsn) as conn:
                row = conn.execute(
                    "SELECT COALESCE(sum(pages_scanned), 0), count(last_heartbeat_at) "
                    "FROM v_site_progress").fetchone()
                assert row is not None
                n, hb = row
                dl = scalar(conn, "SELECT count(*) FROM dead_letters")
            return n == pages and hb == len(summary["sites"]) and dl >= 1

        wait_for(caught_up, 300, "the consumer to store the simulated campaign",
                 procs=(consumer,), interval=2)

        # Prometheus with the project's rules; only `for:` is shortened (see module doc).
        (tmp / "rules").mkdir()
        shutil.copy(RULES / "recording.yml", tmp / "rules" / "recording.yml")
        alerts = (RULES / "alerts.yml").read_text(encoding="utf-8")
        alerts, n_for = re.subn(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", alerts)
        assert n_for >= 8
        (tmp / "rules" / "alerts.yml").write_text(alerts, encoding="utf-8")
        prom_port = free_port()
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules/recording.yml, rules/alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: sohoa-consumer\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n",
            encoding="utf-8")
        prom_proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            cwd=tmp, stdout=prom_log, stderr=subprocess.STDOUT, start_new_session=True)
        r = Run(f"http://127.0.0.1:{prom_port}", reader_dsn, owner_dsn, summary, roles)

        def scraped() -> bool:
            if prom_proc.poll() is not None:
                raise AssertionError((tmp / "prometheus.log").read_text()[-2000:])
            try:
                res = _prom_query(r, "sohoa:site_completion:ratio", instant=True)
            except OSError:
                return False
            return len(res["data"]["result"]) == len(summary["sites"])

        wait_for(scraped, 120, "Prometheus to scrape the consumer and record", interval=1)
        # Range panels need a few samples; alerts need a couple of evaluations.
        time.sleep(8)
        yield r
    finally:
        if prom_proc is not None and prom_proc.poll() is None:
            prom_proc.terminate()
            try:
                prom_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                prom_proc.kill()
        prom_log.close()
        consumer.stop()


def _site_values(run: Run) -> list[str]:
    board = _boards()["chi-tiet-diem.json"]
    var = board["templating"]["list"][0]
    m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
    assert m, var
    qs = urllib.parse.urlencode({"match[]": m.group(1)})
    values = _get(f"{run.prom_url}/api/v1/label/{m.group(2)}/values?{qs}")["data"]
    return values


def _expand_sql(raw: str, site: str | None) -> str:
    """Grafana's macros for the time range of the boards (now-30d .. now+30d)."""
    now = datetime.now(UTC)
    frm = (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    to = (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{frm}' AND '{to}'", raw)
    if site is not None:
        out = out.replace("$site", site)
    assert "$" not in out, out
    return out


def _boards_with_sites(run: Run) -> list[tuple[str, dict, str | None]]:
    out: list[tuple[str, dict, str | None]] = []
    for name, board in _boards().items():
        if board["templating"]["list"]:
            out += [(name, board, site) for site in _site_values(run)]
        else:
            out.append((name, board, None))
    return out


def test_site_variable_lists_every_site(run: Run) -> None:
    assert sorted(_site_values(run)) == sorted(s["site_id"] for s in run.summary["sites"])


def test_every_prometheus_panel_query_returns_data(run: Run) -> None:
    problems = []
    checked = 0
    for name, board, site in _boards_with_sites(run):
        for panel, t in _targets(board):
            if "expr" not in t:
                continue
            expr = t["expr"].replace("$site", site) if site else t["expr"]
            assert "$" not in expr, expr
            try:
                res = _prom_query(run, expr, instant=t["instant"])
            except urllib.error.HTTPError as exc:
                problems.append(f"{name} / {panel['title']} [{site}]: HTTP {exc.code} "
                                f"{exc.read()[:300]!r}")
                continue
            result = res["data"]["result"]
            if res["status"] != "success" or not result:
                problems.append(f"{name} / {panel['title']} [{site}]: empty: {expr}")
            elif not t["instant"] and not any(len(s["values"]) >= 2 for s in result):
                problems.append(f"{name} / {panel['title']} [{site}]: < 2 samples: {expr}")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 20


def test_every_sql_panel_query_returns_rows_as_the_reader(run: Run) -> None:
    import psycopg

    problems = []
    checked = 0
    with psycopg.connect(run.reader_dsn, autocommit=True) as conn:
        assert scalar(conn, "SELECT current_user") == "sohoa_reader"
        for name, board, site in _boards_with_sites(run):
            for panel, t in _targets(board):
                if "rawSql" not in t:
                    continue
                query = _expand_sql(t["rawSql"], site)
                try:
                    cur = conn.execute(query)
                    rows = cur.fetchall()
                    assert cur.description is not None, query
                    cols = [c.name for c in cur.description]
                except psycopg.Error as exc:
                    problems.append(f"{name} / {panel['title']} [{site}]: {exc}")
                    continue
                if not rows:
                    problems.append(f"{name} / {panel['title']} [{site}]: no rows")
                elif t["format"] == "time_series" and cols[0] != "time":
                    problems.append(f"{name} / {panel['title']}: first column {cols[0]!r}")
                checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 10


def test_reader_role_cannot_change_progress(run: Run) -> None:
    import psycopg

    with psycopg.connect(run.reader_dsn, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE sites SET target_pages = 0")


def test_alerts_fire_for_the_stalled_offline_and_late_sites_only(run: Run) -> None:
    holiday = _vn_holiday_today()
    if holiday:
        pytest.skip(f"today is a Vietnamese public holiday ({holiday}): working_now is 0")
    expected = {("SohoaSiteStalled", run.roles["stalled"]),
                ("SohoaSiteOffline", run.roles["offline"]),
                ("SohoaSiteBehindSchedule", run.roles["late"])}

    def settled() -> set | None:
        firing = {a for a in _firing(run) if a[0] in SITE_ALERTS}
        return firing if expected <= firing else None

    firing = wait_for(settled, 90, f"alerts {sorted(expected)}", interval=2)
    time.sleep(3)  # a few more evaluations: nothing else may join
    firing = {a for a in _firing(run) if a[0] in SITE_ALERTS}
    assert firing == expected
    # The boards' counters agree with the alerts.
    res = _prom_query(run, 'count(ALERTS{alertname="SohoaSiteStalled",alertstate="firing"})',
                      instant=True)
    assert float(res["data"]["result"][0]["value"][1]) == 1


def test_qc_ratio_is_highest_for_the_high_qc_site(run: Run) -> None:
    res = _prom_query(run, "sohoa:site_qc_failed:ratio", instant=True)
    ratios = {s["metric"]["site"]: float(s["value"][1]) for s in res["data"]["result"]}
    worst = max(ratios, key=lambda site: ratios[site])
    assert worst == run.roles["qc"] and ratios[worst] > 0.2
    assert all(v < 0.1 for site, v in ratios.items() if site != worst)
