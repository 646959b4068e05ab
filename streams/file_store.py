"""The assembly's ``files`` table read and written by the file's own partition, on either store.

Faust's table API picks the partition of a write from the event being processed; the assembly
folds a batch of events from many partitions and writes each file once at the end, so it names
the partition itself (the changelog always had it; a RocksDB store keeps one database per
partition, so the local write must have it too).

On the RocksDB store a value reaches the local database only once its changelog record is
acknowledged (until then it is read from ``_unacked``): the database is never ahead of the
changelog, so after a kill -9 a restart on the same disk starts from exactly the state a
rebuild from the changelog would give, the state the memory store has always recovered.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from streams.state_codec import is_compact


class FileStore:
    def __init__(self, table: Any, on_disk: bool) -> None:
        self.table = table
        self.on_disk = on_disk
        self._unacked: dict[str, bytes] = {}
        self._scan_options: Any = None

    def get(self, key: str, partition: int) -> bytes | None:
        if not self.on_disk:
            return self.table.data.get(key)
        raw = self._unacked.get(key)
        if raw is not None:
            return raw
        store = self.table.data
        return store._db_for_partition(partition).get(store._encode_key(key))

    def put(self, key: str, partition: int, raw: bytes) -> Any:
        """Write ``raw``; returns the future of its changelog record's acknowledgement."""
        if not self.on_disk:
            self.table.data[key] = raw
            return self.table.send_changelog(partition, key, raw)
        self._unacked[key] = raw
        return self.table.changelog_topic.send_soon(
            key=key, value=raw, partition=partition, key_serializer=self.table.key_serializer,
            value_serializer=self.table.value_serializer, eager_partitioning=True,
            callback=partial(self._acked, key, partition, raw))

    def _acked(self, key: str, partition: int, raw: bytes, fut: Any) -> None:
        fut.result()  # a failed send raises here, as Faust's own callback does
        store = self.table.data
        store._db_for_partition(partition).put(store._encode_key(key), raw)
        if self._unacked.get(key) is raw:
            del self._unacked[key]
        self.table._on_changelog_sent(fut)  # the offset the database now holds

    def open_items(self) -> Iterator[tuple[str, bytes]]:
        """Files of the partitions this worker owns that are not assembled (an assembled
        file's value is compact: no timer concerns it, and it is not decoded)."""
        if not self.on_disk:
            for key, raw in list(self.table.data.items()):
                if raw and not is_compact(raw):
                    yield key, raw
            return
        store = self.table.data
        if self._scan_options is None:
            import rocksdict

            self._scan_options = rocksdict.ReadOptions()
            self._scan_options.fill_cache(False)  # a full scan must not evict the hot files
        for db in list(store._dbs_for_actives()):
            for k, raw in db.items(read_opt=self._scan_options):
                if k != store.offset_key and raw and not is_compact(raw):
                    yield store._decode_key(k), raw
