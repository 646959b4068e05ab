"""Three Kafka brokers (infra/cluster.py: KRaft, replication factor 3, min.insync.replicas 2):
the agent, two Faust assembly workers, a QC/verdict worker and two consumers run against it,
and the leader of the busiest site-events partition is killed -9 under load, then started
again while the load still runs. Nothing is lost, nothing is counted twice, no component had
to be restarted, and the pauses the kill and the restart caused (longest stretches without
growth of PostgreSQL's page count) stay within a bound derived from the configuration."""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.cluster import KafkaCluster
from infra.procs import free_port
from infra.topics import apply_spec, load_spec
from sohoa.config import TopicsConfig
from tests.support.client_timeouts import MARGIN_S, ClientTimeouts, client_timeouts
from tests.support.procs import wait_for
from tests.support.spine import Spine, log_records

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PAGES = int(os.environ.get("SOHOA_CLUSTER_PAGES", "600"))
LOAD_S = 60.0  # the writer's pages spread over this long: kill, failover and restart under load
PER_FILE = 25


@pytest.fixture
def cluster(tmp_path: Path):
    c = KafkaCluster(tmp_path / "kafka3", heap="384m")
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _busiest_partition(cluster: KafkaCluster, topic: str) -> tuple[int, int, int]:
    """(partition, leader node, end offset) of the partition holding most records."""
    from kafka import TopicPartition

    from sohoa.kafka_clients import make_consumer

    c = make_consumer(cluster.kafka_config(), group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        ends = c.end_offsets(tps)
    finally:
        c.close()
    tp, end = max(ends.items(), key=lambda kv: kv[1])
    return tp.partition, cluster.leaders(topic)[tp.partition], end


def _partition(cluster: KafkaCluster, topic: str, partition: int) -> dict:
    """The partition's description (leader_id, isr_nodes…); {} while no live node answers
    (the admin client may pick the dead node for its request)."""
    from kafka.errors import KafkaError

    from sohoa.kafka_clients import make_admin

    try:
        admin = make_admin(cluster.kafka_config(), request_timeout_ms=10000)
        try:
            [desc] = admin.describe_topics([topic])
        finally:
            admin.close()
    except KafkaError:
        return {}
    return next(p for p in desc["partitions"] if p["partition_index"] == partition)


def _props(cluster: KafkaCluster, node_id: int) -> dict[str, str]:
    return dict(line.split("=", 1) for line in
                cluster.node(node_id).properties.read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def stall_bound(cluster: KafkaCluster, node_id: int, t: ClientTimeouts) -> float:
    """The longest PostgreSQL's page count may stand still after a leader dies: the controller
    fences the dead node and moves its leaderships after broker.session.timeout.ms; the agent's
    producer reaches the new leader within its reconnect back-off; the consumer fetches from
    it at once (already connected to every live node) and writes within one batch."""
    fence_s = int(_props(cluster, node_id)["broker.session.timeout.ms"]) / 1000
    return fence_s + t.agent_reconnect_max_s + t.consumer_batch_s + MARGIN_S


def longest_stall(samples: list[tuple[float, int]], start: float, end: float, total: int,
                  *, begun_in: bool = False) -> float:
    """The longest stretch without growth of the count (below ``total``) that overlaps
    [start, end] (monotonic seconds) or, with ``begun_in``, that began within it."""
    stall, run_start = 0.0, None
    for (t0, n0), (t1, n1) in itertools.pairwise(samples):
        if n1 == n0 and n1 < total:
            run_start = t0 if run_start is None else run_start
            if (start <= run_start <= end) if begun_in else (t1 >= start and run_start <= end):
                stall = max(stall, t1 - run_start)
        else:
            run_start = None
    return stall


def test_leader_killed_and_restarted_under_load_on_three_brokers(
        stack, cluster: KafkaCluster, tmp_path: Path) -> None:
    suffix = os.urandom(4).hex()
    topics = TopicsConfig(site_events=f"c3.site.{suffix}", file_events=f"c3.file.{suffix}",
                          dead_letters=f"c3.dead.{suffix}")
    apply_spec(cluster.kafka_config(), load_spec(topics, replication_factor=3,
                                                 min_insync_replicas=2))
    spine = Spine(stack, tmp_path, "xa-ba-broker",
                  SOHOA_KAFKA__BOOTSTRAP=cluster.bootstrap,
                  SOHOA_TOPICS__SITE_EVENTS=topics.site_events,
                  SOHOA_TOPICS__FILE_EVENTS=topics.file_events,
                  SOHOA_TOPICS__DEAD_LETTERS=topics.dead_letters)
    # read_events() in assert_exact reads through the stack's settings: point it at the cluster.
    spine.stack = _ClusterView(stack, cluster)
    timeouts = client_timeouts(spine.env)
    # Two of each scalable part: the same group/app id, so they share the partitions.
    spine.commands.update({"assembly2": ["streams", "--role", "assembly"],
                           "consume2": ["consume"]})
    spine.env_for = {
        "assembly2": {"SOHOA_STREAMS__WEB_PORT": str(free_port()),
                      "SOHOA_STREAMS__DATA_DIR": str(tmp_path / "faust-2")},
        "consume2": {"SOHOA_CONSUMER__METRICS_PORT": str(free_port())},
    }
    spine.start()
    try:
        # The load starts once both assembly workers hold partitions of their table (RocksDB
        # opens one database per partition it is given). This test is about a broker's
        # failover; a worker joining under load is
        # tests/streams/test_streams_rebalance_load.py's (issue 24).
        app_id = spine.env["SOHOA_STREAMS__APP_ID"]
        for data_dir in (tmp_path / "faust" / app_id, tmp_path / "faust-2" / app_id):
            def holds(d: Path = data_dir) -> list[Path] | None:
                return list(d.rglob("files-*.db")) or None

            wait_for(holds, 120, f"an assembly worker holding partitions in {data_dir}",
                     spine.alive_procs())
        spine.write_pages(PAGES, delay=LOAD_S / PAGES)
        samples: list[tuple[float, int]] = []

        def sample() -> int:
            n = spine.pg_pages()
            samples.append((time.monotonic(), n))
            return n

        def until(check, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            while not check():
                spine.supervise()
                assert time.monotonic() < deadline, f"timed out: {what}"
                time.sleep(0.25)

        until(lambda: sample() >= PAGES // 4, 240, "the load reaching PostgreSQL")
        part, leader, end = _busiest_partition(cluster, topics.site_events)
        bound = stall_bound(cluster, leader, timeouts)
        at_kill = samples[-1][1]
        spine.note(f"kill -9 broker {leader}, leader of {topics.site_events}[{part}] "
                   f"({end} records), at {at_kill} pages counted; stall bound {bound:.1f} s")
        killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
        cluster.kill_node(leader)
        assert not cluster.node(leader).running()
        try:
            # Failover under load: a new leader, and pages counted again. The leader is the
            # one the check saw: asked again, the admin client may pick the dead node.
            seen: dict = {}

            def failed_over() -> bool:
                if sample() <= at_kill:
                    return False
                seen.clear()
                seen.update(_partition(cluster, topics.site_events, part))
                return seen.get("leader_id", -1) not in (leader, -1)

            until(failed_over, 120, "a new leader and pages counted after the kill")
            new_leader = seen["leader_id"]
            spine.note(f"partition {part} now led by broker {new_leader}")
            # Down past replica.lag.time.max.ms: the node comes back out of the ISR and must
            # catch up under load.
            down_s = int(_props(cluster, leader)["replica.lag.time.max.ms"]) / 1000 + MARGIN_S
            until(lambda: sample() >= 0 and time.monotonic() - killed_at >= down_s, down_s,
                  "the broker down long enough")
            assert spine.writer is not None and spine.writer.poll() is None, \
                "the load was over before the broker's restart"
            at_restart = sample()
            assert at_restart < PAGES, "every page was counted before the broker came back"
        finally:
            restarted_at = time.monotonic()
            spine.note(f"start broker {leader} at {samples[-1][1]} pages counted")
            cluster.start_node(leader, wait=False)
        until(lambda: sample() >= PAGES, 300, "every page counted after the restart")
        cluster.wait_ready()
        until(lambda: leader in _partition(cluster, topics.site_events, part).get(
            "isr_nodes", ()), 120, f"broker {leader} back in the ISR of partition {part}")
        # The consumers' Kafka clients log losing the broker (the agent silences its own).
        met = {n: len(log_records(spine.logs(n), killed_wall, None,
                                  lambda r: str(r.get("logger", "")).startswith("kafka")
                                  and r.get("level") in ("warning", "error")))
               for n in ("consume", "consume2")}
        spine.note(f"kafka client errors after the kill: {met}")
        assert all(met.values()), f"a consumer never met the dead broker: {met}"
        after_kill = longest_stall(samples, killed_at, restarted_at, PAGES)
        after_restart = longest_stall(samples, restarted_at, samples[-1][0], PAGES,
                                      begun_in=True)
        spine.note(f"longest stall in PostgreSQL's page count: {after_kill:.1f} s after the "
                   f"kill, {after_restart:.1f} s after the restart (bound {bound:.1f} s; "
                   f"{len(samples)} samples ~0.25 s apart)")
        assert after_kill <= bound, f"the leader kill stalled counting {after_kill:.1f} s"
        assert after_restart <= bound, f"the restart stalled counting {after_restart:.1f} s"
        spine.wait_settled(PAGES, timeout=300)
        spine.assert_restarts()
        spine.assert_exact(PAGES)
    finally:
        spine.stop_all()


class _ClusterView:
    """The session stack with its Kafka settings swapped for the cluster's."""

    def __init__(self, stack, cluster: KafkaCluster) -> None:
        self._stack = stack
        kafka = stack.settings.kafka.model_copy(update={"bootstrap": cluster.bootstrap})
        self.settings = stack.settings.model_copy(update={"kafka": kafka})

    def __getattr__(self, name: str):
        return getattr(self._stack, name)
