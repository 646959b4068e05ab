"""Three Kafka brokers (infra/cluster.py: KRaft, replication factor 3, min.insync.replicas 2):
the agent, two Faust assembly workers, a QC/verdict worker and two consumers run against it,
and the leader of the busiest site-events partition is killed -9 under load. Nothing is lost,
nothing is counted twice; the pause it caused (longest gap in PostgreSQL's page count growth)
is printed and written to the run's log (faults.log in the test's tmp dir)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from infra.cluster import KafkaCluster
from infra.procs import free_port
from infra.topics import apply_spec, load_spec
from sohoa.config import TopicsConfig
from tests.test_faults import Spine

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PAGES = int(os.environ.get("SOHOA_CLUSTER_PAGES", "600"))


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


def test_leader_killed_under_load_on_three_brokers(stack, cluster: KafkaCluster,
                                                   tmp_path: Path) -> None:
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
    # read_all() in assert_exact reads through the stack's settings: point it at the cluster.
    spine.stack = _ClusterView(stack, cluster)
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
        spine.write_pages(PAGES, delay=0.02)
        samples: list[tuple[float, int]] = []

        def sample() -> int:
            n = spine.pg_pages()
            samples.append((time.monotonic(), n))
            return n

        deadline = time.monotonic() + 240
        while sample() < PAGES // 4:
            assert time.monotonic() < deadline, "load never reached PostgreSQL"
            time.sleep(0.25)
        part, leader, end = _busiest_partition(cluster, topics.site_events)
        spine.note(f"kill -9 broker {leader}, leader of {topics.site_events}[{part}] "
                   f"({end} records), at {samples[-1][1]} pages counted")
        killed_at = time.monotonic()
        cluster.kill_node(leader)
        try:
            deadline = time.monotonic() + 420
            while sample() < PAGES:
                spine.supervise()
                assert time.monotonic() < deadline, "pages stopped arriving after the kill"
                time.sleep(0.25)
            new_leader = cluster.leaders(topics.site_events)[part]
            spine.note(f"partition {part} now led by broker {new_leader}")
            assert new_leader != leader
        finally:
            cluster.start_node(leader)
        # The longest stretch without growth that overlaps the kill.
        stall, run_start, prev = 0.0, None, samples[0]
        for t, n in samples[1:]:
            if n == prev[1] and n < PAGES:
                run_start = run_start or prev[0]
                if t >= killed_at and run_start <= killed_at + 60:
                    stall = max(stall, t - run_start)
            else:
                run_start = None
            prev = (t, n)
        spine.note(f"pause caused by the leader kill: longest stall in PostgreSQL's page count "
                   f"{stall:.1f} s ({len(samples)} samples ~0.25 s apart)")
        spine.wait_settled(PAGES, timeout=300)
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
