"""How long each client of the spine waits on a broker or database that has gone away, read from
the clients sohoa really builds (its configuration, then the library defaults it keeps), so a
fault test can outlast each of them instead of guessing a pause.

A fault shorter than these is absorbed by a retry inside one call and proves little: the
interesting paths (a group member evicted, a request given up, a record expired back to the
outbox) only run once the timeout has passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from unittest import mock

from sohoa.config import Settings

# Past a timeout by more than one heartbeat (3 s in both Kafka clients) and a poll (0.5 s), so
# the client has acted on it before the peer comes back.
MARGIN_S = 5.0


@dataclass(frozen=True)
class ClientTimeouts:
    agent_block_s: float        # the agent's producer: longest a send or connect blocks
    agent_request_s: float      # ... and waits for a broker's answer
    agent_delivery_s: float     # ... then gives a record up (it is re-sent from the outbox)
    agent_reconnect_max_s: float  # ... longest back-off between connection attempts
    agent_heartbeat_s: float    # the agent's SiteHeartbeat period
    consumer_session_s: float   # `sohoa consume` (kafka-python): the group evicts it after this
    consumer_request_s: float
    consumer_batch_s: float     # a batch closes (and is written) at the latest after this
    streams_session_s: float    # the Faust workers (aiokafka): group session
    streams_request_s: float
    streams_metadata_s: float   # their metadata refresh: a partition-less topic waits this
    pg_connect_s: float         # libpq connect_timeout of the consumer and the tools

    def broker_gone(self) -> float:
        """A broker killed: connections are refused at once, so no request waits; what runs
        out is every group's session, the agent's blocking send and the workers' metadata."""
        return max(self.agent_block_s, self.consumer_session_s, self.streams_session_s,
                   self.streams_metadata_s) + MARGIN_S

    def broker_silent(self) -> float:
        """A broker frozen (partition): connections stay open and requests hang until each
        client's request timeout; sessions run out too. (Faust's producer request timeout,
        20 min by default, is the one left out: no test waits that long.)"""
        return max(self.agent_request_s, self.consumer_request_s, self.streams_request_s,
                   self.consumer_session_s, self.streams_session_s) + MARGIN_S

    def agent_cut_off(self) -> float:
        """The broker gone for the agent alone: past its blocking send, its request timeout and
        its delivery timeout, after which records in flight are given up and re-sent."""
        return max(self.agent_block_s, self.agent_request_s, self.agent_delivery_s) + MARGIN_S

    def postgres_gone(self) -> float:
        return self.pg_connect_s + MARGIN_S

    def member_gone(self, component: str) -> float:
        """A component killed: its consumer group keeps the dead member for a session, so a
        pause past it makes the restart join a group that has rebalanced without it. The agent
        belongs to no group: its absence shows at the centre as missed heartbeats."""
        return {"consume": self.consumer_session_s,
                "assembly": self.streams_session_s,
                "ocr": self.streams_session_s,
                "watch": max(self.agent_heartbeat_s, self.agent_block_s)}[component] + MARGIN_S


def settings_of(env: dict[str, str]) -> Settings:
    """The settings a component started with ``env`` reads."""
    with mock.patch.dict(os.environ, env):
        return Settings()


def client_timeouts(env: dict[str, str]) -> ClientTimeouts:
    """Build the agent's producer, the consumer's client and a Faust app as the components do
    (the broker must be up: kafka-python connects when built) and read their settings."""
    from producers.sender import Sender
    from sohoa.kafka_clients import make_consumer
    from streams.faustapp import make_app

    settings = settings_of(env)
    producer = Sender(settings, None, "timeouts-probe", [])._connect()
    assert producer is not None, "no broker to build the agent's producer against"
    try:
        agent = producer.config
    finally:
        producer.close(timeout=5)
    # `sohoa consume` adds only max_poll_records and client_id to these (consumers/consumer.py).
    consumer = make_consumer(settings.kafka, group_id=None)
    try:
        cons = consumer.config
    finally:
        consumer.close()
    # Built, never started: only its settings are read (its data dir is the run's own).
    app = make_app(settings, f"{settings.streams.app_id}-timeouts-probe",
                   settings.streams.web_port, 1)
    conf = app.conf
    return ClientTimeouts(
        agent_block_s=agent["max_block_ms"] / 1000,
        agent_request_s=agent["request_timeout_ms"] / 1000,
        agent_delivery_s=agent["delivery_timeout_ms"] / 1000,
        agent_reconnect_max_s=agent["reconnect_backoff_max_ms"] / 1000,
        agent_heartbeat_s=settings.watcher.heartbeat_interval_s,
        consumer_session_s=cons["session_timeout_ms"] / 1000,
        consumer_request_s=cons["request_timeout_ms"] / 1000,
        consumer_batch_s=settings.consumer.batch_max_ms / 1000,
        streams_session_s=float(conf.broker_session_timeout),
        streams_request_s=float(conf.broker_request_timeout),
        streams_metadata_s=conf.consumer_metadata_max_age_ms / 1000,
        pg_connect_s=settings.postgres.connect_timeout_s,
    )
