"""No password leaves through `sohoa config show` or the logs, whatever form it takes: URL
userinfo (plain or percent-encoded), ?password= query strings (names percent-encoded too),
libpq key=value pairs (bare, quoted, spaced), JAAS-style quotes, and password-like keys."""

from __future__ import annotations

import io
import json
import logging

import pytest
from click.testing import CliRunner

from sohoa.cli import main
from sohoa.logs import JsonFormatter, TextFormatter
from sohoa.masking import is_secret_name, mask_tree

# No SOHOA_* set, cwd a tmp dir.
pytestmark = pytest.mark.usefixtures("isolated_config")

# (DSN, the secret in it, text that must stay visible)
DSN_FORMS = [
    ("postgresql://w:hunter2@db.tinh:5432/sohoa", "hunter2", "db.tinh:5432"),
    ("postgresql://w:hun%40ter%2F2@db.tinh:5432/sohoa", "hun%40ter%2F2", "db.tinh:5432"),
    ("postgresql://w:p@ss/w0rd@db.tinh/sohoa", "ss/w0rd", "sohoa"),
    ("postgres://w@db.tinh/sohoa?sslmode=require&password=Qu3ry", "Qu3ry", "sslmode=require"),
    ("postgresql://w@db.tinh/sohoa?password=Fir%24t&sslmode=require", "Fir%24t", "sslmode"),
    ("postgresql://w@db.tinh/sohoa?pass%77ord=Enc0ded", "Enc0ded", "db.tinh"),
    ("postgresql://w@db.tinh/sohoa?sslpassword=K3yPass", "K3yPass", "db.tinh"),
    ("host=db.tinh user=w password=Bare1 dbname=sohoa", "Bare1", "dbname=sohoa"),
    ("host=db.tinh user=w password = 'with sp\\'ace' dbname=sohoa", "sp\\'ace", "dbname=sohoa"),
    ('host=db.tinh password="Dbl Quoted" dbname=sohoa', "Dbl Quoted", "host=db.tinh"),
]


@pytest.mark.parametrize(("dsn", "secret", "kept"), DSN_FORMS)
@pytest.mark.parametrize("field", ["DSN", "READER_DSN", "OWNER_DSN"])
def test_config_show_masks_every_dsn_form(monkeypatch, dsn, secret, kept, field) -> None:
    monkeypatch.setenv(f"SOHOA_POSTGRES__{field}", dsn)
    monkeypatch.setenv("SOHOA_KAFKA__SASL_PASSWORD", "Sasl-s3cret")
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert secret not in result.output, (args, result.output)
        assert "Sasl-s3cret" not in result.output
        assert kept in result.output  # the rest of the DSN stays useful


def test_password_like_keys_are_masked_wholly() -> None:
    tree = {"sasl_password": "a1", "api_key": "a2", "token": "a3", "client_secret": "a4",
            "nested": [{"Password": "a5", "secret_key": "a6"}], "key": "site/file",
            "keyfile": "/etc/k.pem", "passed": True, "bootstrap": "h:9092"}
    out = mask_tree(tree)
    assert not any(f"a{i}" in json.dumps(out) for i in range(1, 7))
    assert out["key"] == "site/file" and out["keyfile"] == "/etc/k.pem" and out["passed"]
    assert is_secret_name("sasl_password") and is_secret_name("SOHOA_API_TOKEN")
    assert not is_secret_name("page_key_count") and not is_secret_name("passfile")


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_logs_mask_secrets_in_messages_extras_and_tracebacks(formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger("sohoa.test.secrets")
    log.addHandler(handler)
    log.propagate = False
    try:
        for dsn, _secret, _kept in DSN_FORMS:
            log.warning("connecting to %s", dsn, extra={"target": dsn, "dsn": dsn})
        log.warning("cfg", extra={"api_key": "Xk1", "detail": {"token": "Xk2"},
                                  "sasl_password": "Xk3"})
        try:
            raise RuntimeError(f"cannot reach {DSN_FORMS[0][0]}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    for _dsn, secret, _kept in DSN_FORMS:
        assert secret not in text
    assert not any(k in text for k in ("Xk1", "Xk2", "Xk3"))
    assert "db.tinh" in text
