"""Site identity: each site authenticates to Kafka as its own SCRAM user that may only write
site events and dead letters, signs every record, and the centre (assembly app, consumer)
refuses a record that is unsigned, signed with another key or claims another site.

The integration tests run their own broker with SASL/SCRAM + the StandardAuthorizer (the same
`infra/kafka.py` as `sohoa up` with ``stack.kafka_sasl``), the real agent, the real assembly
app and the real consumer; PostgreSQL is the session stack's."""

from __future__ import annotations

import json
import secrets
import time
from collections import namedtuple
from pathlib import Path

import pytest
from pydantic import SecretStr

from sohoa.config import IdentityConfig, KafkaConfig, Settings, StackConfig, TopicsConfig
from sohoa.events import PageScanned, SiteHeartbeat
from sohoa.identity import HEADER_SIG, HEADER_SITE, Signer, SiteGuard

SECRET_A = "a" * 40
SECRET_B = "b" * 40
TOPIC = "sohoa.site-events"


def page(site: str, code: str = "HS-1", n: int = 1) -> PageScanned:
    return PageScanned.make(site_id=site, fonds="UBND", file_code=code,
                            document=f"{n:03d}.png", number=n,
                            uri=f"file:///srv/{site}/UBND/{code}/{n:03d}.png",
                            sha256=f"{n:064x}", size_bytes=100, media_type="image/png",
                            path=f"UBND/{code}/{n:03d}.png")


GUARD = SiteGuard({"xa-a": SECRET_A, "xa-b": SECRET_B})


def test_a_record_signed_by_its_own_site_passes() -> None:
    ev = page("xa-a")
    headers = Signer("xa-a", SECRET_A).headers(TOPIC, ev.key(), ev.to_json())
    assert GUARD.refusal(TOPIC, ev.key(), ev.to_json(), headers) is None
    assert GUARD.refusal(TOPIC, ev.key().encode(), ev.to_json(), dict(headers)) is None
    hb = SiteHeartbeat(site_id="xa-b", agent_version="t", outbox_depth=0,
                       oldest_unsent_age_s=0.0, disk_free_bytes=1, roots=[])
    sig = Signer("xa-b", SECRET_B).headers(TOPIC, hb.key(), hb.to_json())
    assert GUARD.refusal(TOPIC, hb.key(), hb.to_json(), sig, claimed="xa-b") is None


def test_every_way_of_claiming_another_site_is_refused() -> None:
    mine, theirs = page("xa-a"), page("xa-b")
    a = Signer("xa-a", SECRET_A)
    v = theirs.to_json()
    cases = {
        "unsigned": (theirs.key(), v, []),
        "site mismatch": (theirs.key(), v, a.headers(TOPIC, theirs.key(), v)),
        # a's MAC presented as b's
        "bad signature": (theirs.key(), v, [(HEADER_SITE, b"xa-b"),
                                            a.headers(TOPIC, theirs.key(), v)[1]]),
        "unknown site key": (theirs.key(), v, Signer("xa-z", "z" * 40).headers(
            TOPIC, theirs.key(), v)),
    }
    for want, (key, value, headers) in cases.items():
        why = GUARD.refusal(TOPIC, key, value, headers)
        assert why is not None and why.startswith(want), (want, why)
    # A signed record altered in any part, or moved to another topic, no longer verifies.
    v = mine.to_json()
    h = a.headers(TOPIC, mine.key(), v)
    assert GUARD.refusal(TOPIC, mine.key(), v.replace(b"HS-1", b"HS-2"), h)
    assert GUARD.refusal(TOPIC, "xa-a/HS-2", v, h)
    assert GUARD.refusal("sohoa.dead-letters", mine.key(), v, h)
    assert GUARD.refusal(TOPIC, mine.key(), v, [*h, (HEADER_SIG, h[1][1])])  # two signatures
    # Duplicate keys: the payload is read as the contract's parsers read it (the last wins).
    dup = v.replace(b'"site_id":"xa-a"', b'"site_id":"xa-a","site_id":"xa-b"')
    refusal = GUARD.refusal(TOPIC, mine.key(), dup, a.headers(TOPIC, mine.key(), dup))
    assert refusal is not None and "site mismatch" in refusal


def test_no_site_secrets_means_no_enforcement_and_short_secrets_are_refused() -> None:
    assert SiteGuard({}).refusal(TOPIC, "k", b"{}", []) is None
    with pytest.raises(ValueError, match="32 characters"):
        IdentityConfig(sites={"xa-a": "short"})
    with pytest.raises(ValueError, match="32 characters"):
        IdentityConfig(site_secret="short")
    with pytest.raises(ValueError, match="extra"):
        IdentityConfig.model_validate({"site_secrets": "x" * 40})
    masked = Settings(identity={"sites": {"xa-a": SECRET_A}, "site_secret": SECRET_B}).masked()
    assert SECRET_A not in json.dumps(masked) and SECRET_B not in json.dumps(masked)


def test_the_consumer_screens_site_events_and_site_signed_dead_letters() -> None:
    from consumers.consumer import screen

    rec = namedtuple("rec", "topic partition offset value key headers")
    topics = TopicsConfig()
    good, forged = page("xa-a"), page("xa-b")
    a = Signer("xa-a", SECRET_A)
    polled = [
        rec(topics.site_events, 0, 1, good.to_json(), good.key().encode(),
            a.headers(topics.site_events, good.key(), good.to_json())),
        rec(topics.site_events, 0, 2, forged.to_json(), forged.key().encode(),
            a.headers(topics.site_events, forged.key(), forged.to_json())),
        rec(topics.file_events, 3, 7, b"{}", b"k", []),          # the centre's own
        rec(topics.dead_letters, 1, 4, b'{"site_id": "xa-b"}', b"xa-b",
            a.headers(topics.dead_letters, b"xa-b", b'{"site_id": "xa-b"}')),
        rec(topics.dead_letters, 1, 5, b'{"site_id": "xa-b"}', b"xa-b", []),  # the centre's
    ]
    ok, refused = screen(GUARD, polled, topics)
    assert [(r.topic, r.offset) for r in ok] == [
        (topics.site_events, 1), (topics.file_events, 7), (topics.dead_letters, 5)]
    assert [(d.topic, d.offset, d.site_id) for d in refused] == [
        (topics.site_events, 2, "unknown"), (topics.dead_letters, 4, "unknown")]
    assert all(d.reason.startswith("site mismatch") for d in refused)
    ok, refused = screen(SiteGuard({}), polled, topics)
    assert len(ok) == len(polled) and not refused


# --- a broker with SASL/SCRAM and ACLs -------------------------------------------------------

SecureKafka = namedtuple("SecureKafka", "centre topics access bootstrap")


@pytest.fixture(scope="module")
def secure(stack, tmp_path_factory):
    from infra.access import grant_site
    from infra.kafka import KafkaNode
    from infra.procs import free_port
    from infra.topics import apply_spec, load_spec

    state = tmp_path_factory.mktemp("sasl")
    st = StackConfig(state_dir=state, kafka_port=free_port(), kafka_controller_port=free_port(),
                     kafka_sasl=True)
    bootstrap = f"{st.host}:{st.kafka_port}"
    centre = KafkaConfig(bootstrap=bootstrap, security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="SCRAM-SHA-512", sasl_username="sohoa-centre",
                         sasl_password=secrets.token_urlsafe(16))
    node = KafkaNode(st, centre)
    node.start(wait=True)
    try:
        topics = TopicsConfig()
        apply_spec(centre, load_spec(topics))
        access = {s: grant_site(centre, topics, s) for s in ("xa-a", "xa-b")}
        yield SecureKafka(centre, topics, access, bootstrap)
    finally:
        node.stop(timeout_s=20)


def site_kafka(secure: SecureKafka, site: str, password: str | None = None) -> KafkaConfig:
    acc = secure.access[site]
    return secure.centre.model_copy(update={
        "sasl_username": acc.user, "sasl_password": SecretStr(password or acc.password)})


def kafka_env(cfg: KafkaConfig) -> dict[str, str]:
    return {"SOHOA_KAFKA__BOOTSTRAP": cfg.bootstrap,
            "SOHOA_KAFKA__SECURITY_PROTOCOL": cfg.security_protocol,
            "SOHOA_KAFKA__SASL_MECHANISM": cfg.sasl_mechanism or "",
            "SOHOA_KAFKA__SASL_USERNAME": cfg.sasl_username or "",
            "SOHOA_KAFKA__SASL_PASSWORD": cfg.sasl_password.get_secret_value()
            if cfg.sasl_password else ""}


def test_a_site_user_may_write_only_site_events_and_dead_letters(secure) -> None:
    from kafka import TopicPartition
    from kafka.errors import (
        GroupAuthorizationFailedError,
        KafkaError,
        TopicAuthorizationFailedError,
    )

    from sohoa.kafka_clients import make_consumer, make_producer

    t = secure.topics
    centre = make_producer(secure.centre)
    centre.send(t.file_events, key="xa-b/HS-1", value=b'{"centre": 1}').get(30)
    centre.send(t.site_events, key="xa-b/HS-1", value=b'{"site": "xa-b"}').get(30)
    centre.close()

    site = site_kafka(secure, "xa-a")
    p = make_producer(site, max_block_ms=15000)
    try:
        assert p.send(t.site_events, key="xa-a/HS-1", value=b"{}").get(30).offset >= 0
        assert p.send(t.dead_letters, key="xa-a", value=b"{}").get(30).offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(t.file_events, key="xa-a/HS-1", value=b"{}").get(30)
    finally:
        p.close()
    for topic in (t.site_events, t.file_events, t.dead_letters):
        with pytest.raises(GroupAuthorizationFailedError):
            list(make_consumer(site, topic, group_id="sohoa-progress", consumer_timeout_ms=8000))
        # Without a group: the broker answers "not authorized" (kafka-python raises it or logs
        # it and yields nothing) while the centre reads the same partitions' records.
        got = {}
        for who, cfg in (("site", site), ("centre", secure.centre)):
            c = make_consumer(cfg, group_id=None, consumer_timeout_ms=6000)
            try:
                c.assign([TopicPartition(topic, n)
                          for n in range(3 if topic == t.dead_letters else 12)])
                c.seek_to_beginning()
                got[who] = [m.value for m in c]
            except TopicAuthorizationFailedError:
                got[who] = []
            finally:
                c.close()
        assert got["site"] == [] and got["centre"], (topic, got)
    with pytest.raises(KafkaError):  # a wrong password does not get in at all
        make_producer(site_kafka(secure, "xa-a", "not-the-password"), max_block_ms=5000)


def test_the_centre_refuses_events_a_site_did_not_sign(secure, stack, tmp_path: Path) -> None:
    import psycopg

    from sohoa.kafka_clients import make_consumer, make_producer
    from tests.support import pages
    from tests.support.pages import PageSpec
    from tests.support.procs import SohoaProcess, run_sohoa, wait_for

    t = secure.topics
    acc = secure.access
    dsn = stack.new_database("ident")
    hot = tmp_path / "hot"
    centre_env = {
        **stack.env, **kafka_env(secure.centre),
        "SOHOA_POSTGRES__DSN": dsn,
        "SOHOA_IDENTITY__SITES": json.dumps({s: a.signing_secret for s, a in acc.items()}),
        "SOHOA_STREAMS__APP_ID": f"ident-{secrets.token_hex(4)}",
        "SOHOA_STREAMS__WEB_PORT": "0", "SOHOA_STREAMS__DATA_DIR": str(tmp_path / "faust"),
        "SOHOA_STREAMS__QC_ENABLED": "false", "SOHOA_STREAMS__COMMIT_INTERVAL_S": "0.5",
        "SOHOA_CONSUMER__METRICS_PORT": "0", "SOHOA_LOGGING__JSON": "true",
    }
    from infra.procs import free_port

    centre_env["SOHOA_STREAMS__WEB_PORT"] = str(free_port())
    centre_env["SOHOA_CONSUMER__METRICS_PORT"] = str(free_port())
    assert run_sohoa(["db", "migrate"], centre_env).returncode == 0

    # The real agent of site xa-a, with its own Kafka user and signing secret.
    for n in (1, 2):
        pages.write_page(hot / "UBND" / "HS-A1" / f"{n:03d}.png", PageSpec(seed=n))
    (hot / "UBND" / "HS-A1" / "DONE").touch()
    agent_env = {
        **stack.env, **kafka_env(site_kafka(secure, "xa-a")),
        "SOHOA_WATCHER__SITE_ID": "xa-a", "SOHOA_WATCHER__ROOTS": json.dumps([str(hot)]),
        "SOHOA_WATCHER__OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        "SOHOA_WATCHER__STABILITY_WINDOW_S": "0.3",
        "SOHOA_IDENTITY__SITE_SECRET": acc["xa-a"].signing_secret,
    }
    res = run_sohoa(["watch", "--once"], agent_env, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]

    # xa-a, authenticated as itself, tries to count for xa-b in every way it can.
    site_a = Signer("xa-a", acc["xa-a"].signing_secret)
    forged = {
        "site mismatch": page("xa-b", "HS-B1", 1),
        "bad signature": page("xa-b", "HS-B2", 1),
        "unsigned": page("xa-b", "HS-B3", 1),
    }
    p = make_producer(site_kafka(secure, "xa-a"))
    try:
        for why, ev in forged.items():
            v = ev.to_json()
            headers = {
                "site mismatch": site_a.headers(t.site_events, ev.key(), v),
                "bad signature": [(HEADER_SITE, b"xa-b"),
                                  site_a.headers(t.site_events, ev.key(), v)[1]],
                "unsigned": None,
            }[why]
            p.send(t.site_events, key=ev.key(), value=v, headers=headers).get(30)
    finally:
        p.close()

    procs = (SohoaProcess(["consume"], centre_env, tmp_path / "consume.log"),
             SohoaProcess(["streams", "--role", "assembly"], centre_env,
                          tmp_path / "assembly.log"))
    try:
        def stored():
            with psycopg.connect(dsn) as conn:
                pages_by_site = dict(conn.execute(
                    "SELECT site_id, count(*) FROM pages GROUP BY site_id").fetchall())
                dls = conn.execute(  # this test's forgeries (the module's other test wrote too)
                    "SELECT reason, site_id FROM dead_letters WHERE source = 'consumer' "
                    "AND payload LIKE '%HS-B_%'").fetchall()
            return (pages_by_site, dls) if pages_by_site.get("xa-a") == 2 and len(dls) >= 3 \
                else None

        pages_by_site, dls = wait_for(stored, 180, "the site's pages and 3 refusals", procs)

        def assembly_refusals():
            c = make_consumer(secure.centre, t.dead_letters, group_id=None,
                              consumer_timeout_ms=3000)
            try:
                got = [json.loads(m.value) for m in c]
            finally:
                c.close()
            out = [d for d in got if d.get("source") == "streams" and "HS-B" in d["payload"]]
            return out if len(out) >= 3 else None

        streams_dls = wait_for(assembly_refusals, 120, "the assembly app's refusals", procs,
                               interval=2.0)
        time.sleep(2)
        c = make_consumer(secure.centre, t.file_events, group_id=None, consumer_timeout_ms=3000)
        try:
            assembled = [json.loads(m.value) for m in c]
        finally:
            c.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
    assert pages_by_site == {"xa-a": 2}  # nothing counted for xa-b
    assert sorted(r.split(":")[0] for r, _ in dls) == sorted(forged)
    assert {s for _, s in dls} == {"unknown"}
    assert sorted(d["reason"].split(":")[1].strip() for d in streams_dls) == sorted(forged)
    assert {(a["site_id"], a["file_code"]) for a in assembled
            if a.get("schema", {}).get("name") == "FileAssembled"} == {("xa-a", "HS-A1")}
