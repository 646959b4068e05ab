"""One memory budget for every RocksDB database of a worker.

faust-streaming opens one RocksDB database per table partition, each with a block cache and
memtables of its own, so the RAM they may take grows with the partitions, the tables and the
standbys of the worker (12 partitions × 2 tables × (2 memtables + a cache) of 4 MB each is
288 MB), and the index and filter blocks of every table file sit outside any cache, growing
with the data. Here all of them share:

- one LRU block cache (``streams.rocksdb_block_cache_mb``) that also holds the index and
  filter blocks of every table file (the newest level's pinned), so what grows with the
  campaign is charged to a fixed budget instead of beside it;
- one write buffer manager (``streams.rocksdb_memtables_mb``): when the memtables of all the
  databases together reach it, the one being written is flushed early.

The budget is the worker's, whatever its partitions, tables and standbys
(docs/architecture.md, "State store"); ``sohoa_streams_rocksdb_bytes`` shows both in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.stores.rocksdb import RocksDBOptions

from sohoa.config import Settings
from streams import metrics

MB = 1024 * 1024


@dataclass(frozen=True)
class RocksMemory:
    """The cache and memtable budget shared by the worker's databases."""

    cache: Any          # rocksdict.Cache
    memtables: Any      # rocksdict.WriteBufferManager

    @classmethod
    def from_settings(cls, settings: Settings) -> RocksMemory | None:
        cfg = settings.streams
        if cfg.store != "rocksdb":
            return None
        import rocksdict

        memory = cls(cache=rocksdict.Cache(cfg.rocksdb_block_cache_mb * MB),
                     memtables=rocksdict.WriteBufferManager(cfg.rocksdb_memtables_mb * MB,
                                                            False))
        metrics.ROCKSDB_BYTES.labels("block_cache").set_function(memory.cache.get_usage)
        metrics.ROCKSDB_BYTES.labels("memtables").set_function(memory.memtables.get_usage)
        return memory


class BudgetedOptions(RocksDBOptions):
    """faust-streaming's options of a partition database (the same memtable size, file size,
    bloom filter and index), with the worker's shared cache and memtable budget."""

    def __init__(self, base: RocksDBOptions, memory: RocksMemory) -> None:
        self.__dict__.update(base.__dict__)
        self.memory = memory

    def as_options(self) -> Any:
        import rocksdict

        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_open_files(-1 if self.max_open_files is None else self.max_open_files)
        opts.set_write_buffer_size(self.write_buffer_size)
        opts.set_max_write_buffer_number(self.max_write_buffer_number)
        opts.set_target_file_size_base(self.target_file_size_base)
        opts.set_write_buffer_manager(self.memory.memtables)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self.memory.cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        opts.set_block_based_table_factory(table)
        return opts


class BudgetedTable(faust.Table):
    """A table whose RocksDB databases open with the worker's shared memory budget."""

    def __init__(self, *args: Any, rocks_memory: RocksMemory | None = None,
                 **kwargs: Any) -> None:
        self.rocks_memory = rocks_memory
        super().__init__(*args, **kwargs)

    def _new_store(self) -> Any:
        store: Any = super()._new_store()
        if self.rocks_memory is not None and getattr(store, "use_rocksdict", False):
            store.rocksdb_options = BudgetedOptions(store.rocksdb_options, self.rocks_memory)
        return store
