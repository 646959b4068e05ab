"""Config precedence: code > SOHOA_* environment > TOML file > defaults; secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sohoa.cli import main
from sohoa.config import load_config

pytestmark = pytest.mark.usefixtures("isolated_config")


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "site.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_without_any_file() -> None:
    s = load_config()
    assert s.qc.min_dpi == 200
    assert s.campaign.timezone == "Asia/Ho_Chi_Minh"


def test_toml_overrides_defaults(tmp_path) -> None:
    p = _toml(tmp_path, '[qc]\nmin_dpi = 300\n[watcher]\nsite_id = "xa-an-binh"\n')
    s = load_config(p)
    assert s.qc.min_dpi == 300
    assert s.watcher.site_id == "xa-an-binh"
    assert s.qc.max_skew_deg == 3.0  # untouched keys keep defaults


def test_environment_overrides_toml(tmp_path, monkeypatch) -> None:
    p = _toml(tmp_path, '[qc]\nmin_dpi = 300\n[kafka]\nbootstrap = "file:1"\n')
    monkeypatch.setenv("SOHOA_QC__MIN_DPI", "400")
    s = load_config(p)
    assert s.qc.min_dpi == 400
    assert s.kafka.bootstrap == "file:1"


def test_code_overrides_environment(monkeypatch) -> None:
    monkeypatch.setenv("SOHOA_QC__MIN_DPI", "400")
    s = load_config(qc={"min_dpi": 250})
    assert s.qc.min_dpi == 250


def test_sohoa_config_env_names_the_file(tmp_path, monkeypatch) -> None:
    p = _toml(tmp_path, "[stack]\nkafka_port = 29999\n")
    monkeypatch.setenv("SOHOA_CONFIG", str(p))
    assert load_config().stack.kafka_port == 29999


def test_sohoa_toml_in_working_directory_is_picked_up(tmp_path) -> None:
    (tmp_path / "sohoa.toml").write_text("[consumer]\nbatch_max_events = 7\n", encoding="utf-8")
    assert load_config().consumer.batch_max_events == 7


def test_missing_config_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.toml")
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.toml"), "config", "show"])
    assert result.exit_code != 0
    assert "Không tìm thấy tệp cấu hình" in result.output


def test_invalid_value_is_rejected_with_its_field(tmp_path) -> None:
    p = _toml(tmp_path, '[qc]\nmin_dpi = "lots"\n')
    with pytest.raises(ValueError, match="min_dpi"):
        load_config(p)


def test_config_show_masks_secrets(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SOHOA_POSTGRES__DSN", "postgresql://w:hunter2@db:5432/sohoa")
    monkeypatch.setenv("SOHOA_KAFKA__SASL_PASSWORD", "s3cret")
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "hunter2" not in result.output and "s3cret" not in result.output
        assert "db:5432" in result.output
    data = json.loads(CliRunner().invoke(main, ["config", "show", "--json"]).output)
    assert data["postgres"]["dsn"] == "postgresql://w:******@db:5432/sohoa"


def test_kafka_client_kwargs_pass_sasl_and_tls_through(tmp_path) -> None:
    p = _toml(tmp_path, '[kafka]\nbootstrap = "a:9093,b:9093"\nsecurity_protocol = "SASL_SSL"\n'
                        'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "site"\n'
                        'sasl_password = "pw"\nssl_cafile = "/etc/ca.pem"\n')
    kw = load_config(p).kafka.client_kwargs()
    assert kw["bootstrap_servers"] == ["a:9093", "b:9093"]
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_password"] == "pw"
    assert kw["ssl_cafile"] == "/etc/ca.pem"


def test_postgres_roles_default_to_the_local_stack_and_follow_an_explicit_dsn(
        monkeypatch) -> None:
    local = load_config().postgres
    assert local.reader_dsn is not None and local.owner_dsn is not None
    assert "sohoa_writer@127.0.0.1:15432" in local.url
    assert "sohoa_reader@" in local.reader_dsn.get_secret_value()
    assert "//sohoa@" in local.owner_dsn.get_secret_value()
    assert all("passfile=.state/secrets/pgpass" in d for d in (
        local.url, local.reader_dsn.get_secret_value(), local.owner_dsn.get_secret_value()))
    # A database set elsewhere brings its own roles: unset ones fall back to its DSN.
    monkeypatch.setenv("SOHOA_POSTGRES__DSN", "postgresql://w@db.tinh/sohoa")
    other = load_config().postgres
    assert other.reader_dsn is None and other.owner_dsn is None


@pytest.mark.parametrize(("text", "key", "section"), [
    ("[qc]\nmin_dpii = 300\n", "min_dpii", "[qc]"),
    ("[watcher]\nstability_windows_s = 5\n", "stability_windows_s", "[watcher]"),
    ('[kafak]\nbootstrap = "127.0.0.1:9092"\n', "kafak", "cấp ngoài cùng"),
    ('[watcher]\nquarantine_dir = "/tmp/q"\n', "quarantine_dir", "[watcher]"),
])
def test_an_unknown_key_is_refused_naming_it_and_its_section(tmp_path, text, key,
                                                              section) -> None:
    from sohoa.errors import ConfigError, ExitCode

    p = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert f"'{key}'" in str(exc.value) and section in str(exc.value)
    # The CLI says so and exits with EX_CONFIG, whatever the command.
    result = CliRunner().invoke(main, ["--config", str(p), "config", "show"])
    assert result.exit_code == ExitCode.CONFIG == 78
    assert "Lỗi cấu hình" in result.output and key in result.output


def test_a_typo_in_an_environment_override_is_refused(monkeypatch) -> None:
    from sohoa.errors import ConfigError

    monkeypatch.setenv("SOHOA_QC__MIN_DPII", "300")
    with pytest.raises(ConfigError, match="min_dpii"):
        load_config()


def test_report_settings_reject_unknown_keys_and_duplicate_contracts(tmp_path) -> None:
    """A misspelt key in the issuer, a contract or its prices is an error, not a default
    silently printed on a document the office signs."""
    from sohoa.errors import ConfigError

    ok = tmp_path / "ok.toml"
    ok.write_text('[reports.issuer]\nform = "party"\nname = "Văn phòng"\nabbreviation = "VPTU"\n'
                  '[reports.issuer.signer]\nauthority = "T/L Ban Thường vụ"\n'
                  '[[reports.contracts]]\ncontractor = "Cty Số Việt"\nnumber = "15/2026/HĐ"\n'
                  'unit_prices = { a4 = 1500 }\n', encoding="utf-8")
    s = load_config(ok)
    assert s.reports.issuer.form == "party"
    assert s.reports.contracts[0].unit_prices.a3_price == 3000   # A3 = two A4 pages
    for bad in ('[reports.issuer]\nnmae = "Sở Nội vụ"\n',
                '[reports.issuer.signer]\nten = "A"\n',
                '[reports]\nissuer_name = "x"\n',
                '[[reports.contracts]]\ncontractor = "A"\nnumber = "1"\n'
                'unit_prices = { a4 = 1, A3 = 2 }\n',
                '[[reports.contracts]]\ncontractor = "Cty Số Việt"\nnumber = "1"\n'
                'unit_prices = { a4 = 1 }\n[[reports.contracts]]\ncontractor = "CTY SO VIET"\n'
                'number = "2"\nunit_prices = { a4 = 1 }\n',
                '[reports.issuer]\nabbreviation = "S NV"\n'):
        path = tmp_path / "bad.toml"
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(ConfigError):
            load_config(path)


def test_the_reports_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "reports.example.toml"
    s = load_config(example)
    assert s.reports.issuer.abbreviation == "SNV"
    assert s.reports.contracts[0].unit_prices.larger_price == 1400
