"""The assembly's ``files`` table read and written by the file's own partition, on either store,
and the index of its open files that the idle check reads.

Faust's table API picks the partition of a write from the event being processed; the assembly
folds a batch of events from many partitions and writes each file once at the end, so it names
the partition itself (the changelog always had it; a RocksDB store keeps one database per
partition, so the local write must have it too).

On the RocksDB store a value reaches the local database only once its changelog record is
acknowledged (until then it is read from ``_unacked``): the database is never ahead of the
changelog, so after a kill -9 a restart on the same disk starts from exactly the state a
rebuild from the changelog would give, the state the memory store has always recovered.

**Open files.** The idle check (once a minute) needs the files not yet assembled: a few
hundred, while the table holds every file of the campaign (200,000 at 5 M pages, almost all
assembled). So the store keeps an index of the open ones, derived from the values written, on
every path a value takes into the store: this worker's own writes and every changelog record
Faust applies (the recovery of a restart, of a worker that got the partition on an empty disk,
and a standby's). On RocksDB the index lives in each partition's database beside the values
(keys ``OPEN`` + the file's key, outside the keys of the table), so a restart on the same disk
has it as it has the values; in memory it is a set, rebuilt with the table from the changelog.

The index may hold a file that is no longer open (dropped when the check reads it), never
miss one that is: an entry is written with its value or before it (one RocksDB write batch
for this worker's writes; before the batch for applied changelog records) and removed with or
after it. A partition's database from before the index has no ``INDEXED`` key: its first check
builds the index by one full read of it (once; a database created empty is marked at once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from streams import metrics
from streams.rocksdb_memory import BudgetedTable
from streams.state_codec import is_compact

OPEN = b"\x00open\x00"           # + a key of the table: that file is open
INDEXED = b"\x00open-index\x00"  # this partition's database has every open file in the index


class FilesTable(BudgetedTable):
    """The ``files`` table: the changelog records Faust applies also keep the open index."""

    file_store: FileStore | None = None

    def _new_store(self) -> Any:
        store = super()._new_store()
        if self.file_store is not None:
            self.file_store.adopt(store)
        return store

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        if self.file_store is None:
            super().apply_changelog_batch(batch)
        else:
            self.file_store.apply_changelog(list(batch), super().apply_changelog_batch)


class FileStore:
    def __init__(self, table: Any, on_disk: bool) -> None:
        self.table = table
        self.on_disk = on_disk
        self._unacked: dict[str, bytes] = {}
        self._open: set[str] = set()   # the memory store's index
        self._scan_options: Any = None
        table.file_store = self
        if table._data is not None:
            self.adopt(table._data)

    def adopt(self, store: Any) -> None:
        """A RocksDB database this store creates starts empty, so its (empty) index is
        complete: marked when it is created."""
        if not self.on_disk:
            return
        opener = store._open_for_partition

        def open_marked(partition: int) -> Any:
            fresh = not store.partition_path(partition).exists()
            db = opener(partition)
            if fresh:
                db.put(INDEXED, b"")
            return db

        store._open_for_partition = open_marked

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
            self._index_memory(key, raw)
            return self.table.send_changelog(partition, key, raw)
        self._unacked[key] = raw
        return self.table.changelog_topic.send_soon(
            key=key, value=raw, partition=partition, key_serializer=self.table.key_serializer,
            value_serializer=self.table.value_serializer, eager_partitioning=True,
            callback=partial(self._acked, key, partition, raw))

    def _acked(self, key: str, partition: int, raw: bytes, fut: Any) -> None:
        import rocksdict

        fut.result()  # a failed send raises here, as Faust's own callback does
        store = self.table.data
        k = store._encode_key(key)
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.put(k, raw)
        if _is_open(raw):
            batch.put(OPEN + k, b"")
        else:
            batch.delete(OPEN + k)
        store._db_for_partition(partition).write(batch)
        if self._unacked.get(key) is raw:
            del self._unacked[key]
        self.table._on_changelog_sent(fut)  # the offset the database now holds

    def apply_changelog(self, batch: list[Any], apply: Callable[[list[Any]], None]) -> None:
        """Changelog records applied by Faust (``apply``), the index kept with them."""
        if not self.on_disk:
            apply(batch)
            for event in batch:
                key = self.table._to_key(event.key)
                self._index_memory(key, self.table.data.get(key))
            return
        import rocksdict

        last: dict[tuple[int, bytes], bytes | None] = {}
        for event in batch:
            msg = event.message
            last[msg.partition, msg.key] = msg.value
        adds: dict[int, Any] = {}
        drops: dict[int, Any] = {}
        for (partition, k), raw in last.items():
            into = adds if _is_open(raw) else drops
            if partition not in into:
                into[partition] = rocksdict.WriteBatch(raw_mode=True)
            if into is adds:
                into[partition].put(OPEN + k, b"")
            else:
                into[partition].delete(OPEN + k)
        store = self.table.data
        for partition, wb in adds.items():   # before the values: never an open value unlisted
            store._db_for_partition(partition).write(wb)
        apply(batch)
        for partition, wb in drops.items():
            store._db_for_partition(partition).write(wb)

    def _index_memory(self, key: str, raw: bytes | None) -> None:
        if _is_open(raw):
            self._open.add(key)
        else:
            self._open.discard(key)

    def open_items(self) -> Iterator[tuple[str, bytes]]:
        """Files of the partitions this worker owns that are not assembled, read through the
        index: an assembled file's value is not read."""
        if not self.on_disk:
            for key in list(self._open):
                raw = self.table.data.get(key)
                metrics.IDLE_VALUES_READ.inc()
                if _is_open(raw):
                    yield key, raw
                else:
                    self._open.discard(key)
            return
        store = self.table.data
        for db in list(store._dbs_for_actives()):
            if db.get(INDEXED) is None:
                self._build_index(db, store.offset_key)
            for entry in db.keys(from_key=OPEN):   # the index's keys sort first
                if not entry.startswith(OPEN):
                    break
                k = entry[len(OPEN):]
                raw = db.get(k)
                metrics.IDLE_VALUES_READ.inc()
                if _is_open(raw):
                    yield store._decode_key(k), raw
                elif store._decode_key(k) not in self._unacked:
                    db.delete(entry)   # assembled (its value and this are in one write)

    def _build_index(self, db: Any, offset_key: bytes) -> None:
        """The index of a database written before it: one full read, once."""
        import rocksdict

        if self._scan_options is None:
            self._scan_options = rocksdict.ReadOptions()
            self._scan_options.fill_cache(False)  # a full scan must not evict the hot files
        wb = rocksdict.WriteBatch(raw_mode=True)
        for k, raw in db.items(read_opt=self._scan_options):
            metrics.IDLE_VALUES_READ.inc()
            if k != offset_key and not k.startswith(b"\x00") and _is_open(raw):
                wb.put(OPEN + k, b"")
        wb.put(INDEXED, b"")
        db.write(wb)


def _is_open(raw: bytes | None) -> bool:
    return bool(raw) and not is_compact(raw)  # type: ignore[arg-type]
