"""The one typed configuration of sohoa.

Precedence, highest first: values passed in code > ``SOHOA_*`` environment variables
(nested with ``__``, e.g. ``SOHOA_KAFKA__BOOTSTRAP=host:9092``) > the TOML file > defaults.
The TOML file is ``--config PATH``, else ``$SOHOA_CONFIG``, else ``./sohoa.toml`` when present.
Every threshold lives here; code never carries its own literal.
"""

from __future__ import annotations

import os
import re
from datetime import date, time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sohoa.events import SITE_ID_RE

DEFAULT_CONFIG_FILE = Path("sohoa.toml")
_config_file: Path | None = None


class Section(BaseModel):
    """A section of the configuration: a key it does not know is an error naming the key and
    its section (a typo such as ``min_dpii`` must not silently leave the default in force)."""

    model_config = ConfigDict(extra="forbid")


class KafkaConfig(Section):
    bootstrap: str = "127.0.0.1:19092"
    client_id: str = "sohoa"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Connection settings in kafka-python's (and aiokafka's) spelling."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                kw[name] = str(getattr(self, name))
        return kw


class TopicsConfig(Section):
    """Topic names; partitions, retention and compaction live in infra/topics.toml."""

    site_events: str = "sohoa.site-events"
    file_events: str = "sohoa.file-events"
    dead_letters: str = "sohoa.dead-letters"
    spec: Path | None = Field(default=None, description="Override of infra/topics.toml")


_LOCAL_DSN = "postgresql://{role}@127.0.0.1:15432/sohoa?passfile=.state/secrets/pgpass"


class PostgresConfig(Section):
    """Three roles, least privilege first: the writer (``dsn``: the consumer, plan imports),
    the reader (``reader_dsn``: status, reports, reconcile, /metrics gauges) and the owner
    (``owner_dsn``: migrations only).

    The defaults are the local stack's (`sohoa up`), whose passwords libpq reads from the
    ``passfile`` it writes. An unset reader or owner DSN is the local stack's while ``dsn`` is,
    and otherwise falls back to ``dsn`` (a database set elsewhere brings its own roles)."""

    dsn: SecretStr = SecretStr(_LOCAL_DSN.format(role="sohoa_writer"))
    reader_dsn: SecretStr | None = None
    owner_dsn: SecretStr | None = None
    connect_timeout_s: float = 5.0

    @model_validator(mode="after")
    def _local_roles(self) -> PostgresConfig:
        if self.dsn.get_secret_value() == _LOCAL_DSN.format(role="sohoa_writer"):
            if self.reader_dsn is None:
                self.reader_dsn = SecretStr(_LOCAL_DSN.format(role="sohoa_reader"))
            if self.owner_dsn is None:
                self.owner_dsn = SecretStr(_LOCAL_DSN.format(role="sohoa"))
        return self

    @property
    def url(self) -> str:
        return self.dsn.get_secret_value()


class StackConfig(Section):
    """The local stack that `sohoa up` runs on this machine."""

    state_dir: Path = Path(".state")
    host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_version: str = "3.9.1"
    verapdf_version: str = "1.30.2"  # PDF/A validator for tests and bench (infra/verapdf.py)
    kafka_heap: str = "512m"
    kafka_home: Path | None = Field(default=None, description="Use an existing Kafka install")
    postgres_port: int = 15432
    # "web" too once web.users (or web.auth = "proxy") is set: `sohoa web` beside the stack.
    components: list[Literal["watch", "streams", "consume", "web"]] = ["watch", "streams",
                                                                     "consume"]
    # The local broker with SASL/SCRAM-SHA-512 and ACLs (infra/kafka.py): kafka.sasl_username
    # becomes its super user; sites get their own users (`sohoa kafka grant-site`). Off by
    # default: the demo stack is one machine on loopback (docs/architecture.md, Site identity).
    kafka_sasl: bool = False
    # `sohoa up --monitoring`: Prometheus and Alertmanager beside the stack (infra/monitoring.py)
    monitoring: bool = False
    prometheus_port: int = 19090
    alertmanager_port: int = 19093
    # The object store (infra/objects.py): SeaweedFS built from its Go module at install time
    # (cached in ~/.cache/sohoa/seaweedfs-<version>/weed), its S3 gateway on `host`:s3_port;
    # its master, volume and filer servers and their gRPC ports take weed_port_base + 0..6.
    object_store: bool = True
    seaweedfs_version: str = "v0.0.0-20261109003541-7506e5f91cd6"
    seaweedfs_bin: Path | None = Field(default=None, description="Use an existing weed binary")
    s3_port: int = 18333
    weed_port_base: int = 18340
    # Every version in the pages bucket is kept this long at least (S3 object lock, COMPLIANCE
    # mode): no key, the admin's included, can delete or shorten it meanwhile. The outputs
    # bucket has no lock (a classified file's OCR outputs are deleted: streams/outputs.py).
    object_lock_days: int = Field(default=30, ge=1)
    objects_stop_timeout_s: float = 10.0  # weed ignores SIGTERM for a while: then SIGKILL
    start_timeout_s: float = 90.0
    component_grace_s: float = 5.0   # a component that dies this soon after `up` is reported
    stop_timeout_s: float = 30.0     # SIGTERM → SIGKILL after this long in `sohoa down`


class WatcherConfig(Section):
    site_id: str = "demo"
    roots: list[Path] = [Path(".state/hotfolder")]
    layout: str = "{fonds}/{file}/{page}"
    extensions: list[str] = [".tif", ".tiff", ".jpg", ".jpeg", ".png", ".pdf"]
    ignore_names: list[str] = ["thumbs.db", ".ds_store", "desktop.ini"]
    ignore_prefixes: list[str] = ["~$", "._", "."]
    # Temp names of write-then-rename (scanner software, rsync, browsers): never pages.
    ignore_suffixes: list[str] = [".tmp", ".part", ".partial", ".crdownload", "~"]
    polling: bool = Field(default=False, description="Poll instead of inotify (SMB/NFS shares)")
    poll_interval_s: float = 2.0
    stability_window_s: float = 2.0
    # A document still empty or truncated this long after its last write is rejected; before
    # that it is read again after each window (a scanner may pause longer than the window).
    incomplete_grace_s: float = 30.0
    reconcile_interval_s: float = 300.0
    idle_timeout_s: float = 3600.0
    close_marker: str = "DONE"
    manifest_name: str = "hoso.json"
    max_file_bytes: int = 512 * 1024 * 1024
    outbox_path: Path = Path(".state/outbox.sqlite3")
    heartbeat_interval_s: float = 30.0
    send_batch: int = 500
    metrics_port: int | None = None
    # Loopback: a site that wants the centre to scrape its agent sets its VPN address here.
    metrics_addr: str = "127.0.0.1"
    hash_workers: int = 0               # 0 = min(4, cores): hashing releases the GIL
    kafka_block_s: float = 10.0         # longest a send or connect may block on a missing broker
    delivery_timeout_s: float = 120.0   # then the record is re-sent from the outbox
    once_timeout_s: float = 60.0        # --once: give up draining (exit 75) after this long
    shutdown_flush_s: float = 10.0      # SIGTERM: try this long to send what is queued
    outbox_retain_sent_s: float = 30 * 86400.0  # sent events kept for audit, then pruned


class StoreConfig(Section):
    """The centre's S3-compatible object store (docs/architecture.md, Object store). Each
    process brings its own key: a site's may write only its own prefix of ``pages_bucket``,
    the workers' read pages and write outputs, reports and the web page read outputs only."""

    # None: no object store; pages travel as file:// URIs (a site on the centre's LAN).
    endpoint: str | None = Field(default=None, description="e.g. http://127.0.0.1:18333")
    region: str = "us-east-1"
    pages_bucket: str = "sohoa-pages"      # s3://<pages_bucket>/<site>/<sha[:2]>/<sha256>
    outputs_bucket: str = "sohoa-outputs"  # OCR outputs and packages
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/?#\s]+/?$", v):
            raise ValueError("an http(s)://host:port URL without a path")
        return v

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None


class UploadConfig(Section):
    """The site agent's uploads of documents to the object store (producers/uploader.py)."""

    enabled: bool = False          # needs [store] endpoint and this site's key
    part_size_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)  # S3's minimum
    multipart_threshold_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    max_bytes_per_s: int = Field(default=0, ge=0)  # 0 = no cap
    # Working hours when uploads may run, e.g. ["07:30-11:30", "13:30-17:00"] (campaign
    # timezone); empty = any time. Detection and the outbox go on outside them.
    hours: list[str] = []
    days: list[int] = [0, 1, 2, 3, 4, 5, 6]  # Monday=0
    retry_max_s: float = Field(default=60.0, gt=0)  # longest wait between failed attempts

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[str]) -> list[str]:
        for span in v:
            m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)", span)
            if not m or (int(m[1]), int(m[2])) >= (int(m[3]), int(m[4])):
                raise ValueError(f"not a span HH:MM-HH:MM (start before end): {span!r}")
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if any(d < 0 or d > 6 for d in v):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        return v


class QcConfig(Section):
    """TT 02/2019/TT-BNV floor and the image checks' thresholds."""

    min_dpi: int = 200
    # Art. 8 TT 05/2025: maps and drawings at 300 dpi. A document whose type (tên loại, from
    # the manifest's record) starts with one of these, case and accents aside, gets that floor.
    min_dpi_large_format: int = 300
    large_format_types: list[str] = ["Bản đồ", "Bản vẽ"]
    require_colour: bool = True
    min_width_mm: float = 140.0    # a little under A5's short side
    max_width_mm: float = 440.0    # a little over A3's long side
    ink_contrast: float = 0.25     # ink is darker than (1 - this) x the page's paper level;
    #                                bleed-through and paper texture are fainter
    # Blank = no text line and no large mark (streams/textmarks.py), in millimetres so the
    # verdict does not depend on the resolution:
    blank_char_min_mm: float = 1.0     # shorter marks are specks (dots and accents too)
    blank_char_max_mm: float = 15.0    # taller ones are not characters
    blank_line_gap_mm: float = 4.0     # marks nearer than this side by side share a line
    blank_line_min_marks: int = 3      # a text line has at least this many character marks
    blank_mark_min_mm: float = 8.0     # stamps, signatures, photos: both sides at least this
    blank_mark_min_fill: float = 0.02  # ... covering this share of their box (not a thin crease)
    assumed_long_side_mm: float = 297.0  # page scale for marks when the file records no dpi
    max_skew_deg: float = 3.0
    min_mean_luma: float = 40.0
    max_mean_luma: float = 250.0
    # Edge strength near ink over the page's ink contrast (so a dark or light scan is not
    # taken for a blurred one): sharp text ~1.6, a 1.2 px Gaussian blur ~1.0, 1.8 px ~0.6.
    min_sharpness_ratio: float = 0.8
    analysis_max_px: int = 1200    # pixel checks run on a copy this long on its long side
    max_megapixels: float = 200.0  # larger (e.g. 2400 dpi) is refused before decoding
    min_side_px: int = 100         # a 1-pixel "page" is not a page
    skew_search_deg: float = 10.0
    workers: int = 0               # 0 = one per core
    pages_per_task: int = 16       # a document's pages per pool task (several workers share it)
    # Object-store documents downloaded once for all their chunks and held on disk at once
    # (each at most sources.max_bytes): the disk this takes is bounded by their product.
    staged_documents: int = Field(default=2, ge=1)


class SourceSiteConfig(Section):
    """Where one site's pages may be read at the centre."""

    model_config = ConfigDict(extra="forbid")

    roots: list[Path] = Field(min_length=1)


class SourcesConfig(Section):
    """What the centre's workers (QC, OCR) may read when an event names a page
    (`streams/sources.py`). A page is read only under its own site's roots; nothing else."""

    model_config = ConfigDict(extra="forbid")

    # [sources.sites.<site_id>] roots = ["/srv/scan/xa-tan-phu"]
    sites: dict[str, SourceSiteConfig] = {}
    # Roots of every site not listed above; "{site_id}" is replaced by the event's site, e.g.
    # ["/mnt/lan-share/{site_id}"]. Without the placeholder all such sites share the roots.
    default_roots: list[str] = []
    # The agent this machine runs (watcher.site_id) may be read under watcher.roots: the local
    # stack (`sohoa up`) and a site that is also its own centre. Off for a central server.
    watcher_roots: bool = True
    max_bytes: int = Field(default=512 * 1024 * 1024, gt=0)  # the agent's max_file_bytes
    read_timeout_s: float = Field(default=120.0, gt=0)  # open + read + SHA-256 of one page

    @field_validator("sites")
    @classmethod
    def _site_ids(cls, v: dict[str, SourceSiteConfig]) -> dict[str, SourceSiteConfig]:
        bad = [s for s in v if not re.match(SITE_ID_RE, s)]
        if bad:
            raise ValueError(f"not a site id: {bad}")
        return v


class OcrConfig(Section):
    enabled: bool = True
    # Tesseract languages of a page when the file's manifest names none for its document
    # (its documents[].language, e.g. "vie+eng", reaches the OCR job through
    # FileAssembled.languages). Vietnamese alone: adding English costs time and accuracy on
    # Vietnamese pages (issue 22; figures in docs/scaling.md).
    languages: str = "vie"
    output_dir: Path = Path(".state/ocr")
    output_type: Literal["pdfa-2", "pdf"] = "pdfa-2"
    # Pages shown upright: orientation detection runs only on a page whose text came out
    # sideways or with a mean word confidence below osd_below_confidence (upside down).
    rotate_pages: bool = True
    osd_below_confidence: float = 60.0
    # Tesseract reads the page in grey, smoothed 3x3 (the PDF keeps the original image):
    # specks stop being read as '.', '_', '|', and grey costs Tesseract less
    # (bench/bench_ocr.py; figures in docs/scaling.md).
    denoise: bool = True
    # Files OCR'd at once, each by one long-lived engine process (streams/ocr_pool.py);
    # Tesseract's own threads (OpenMP) only burn CPU (bench/bench_ocr.py), so keep
    # tesseract_threads = 1 and concurrency = cores.
    concurrency: int = 2
    tesseract_threads: int = 1     # OMP_THREAD_LIMIT per engine process
    engine_max_files: int = 200    # an engine process is replaced after this many files
    progress_every_s: float = 5.0  # OcrProgress events of a file, at most this often
    timeout_s_per_page: float = 60.0
    timeout_s_min: float = 120.0
    retries: int = 2
    backoff_s: float = 5.0
    allow_classified: bool = False
    skip_when_rescan: bool = True  # no OCR for a file whose verdict will be needs-rescan


class StreamsConfig(Section):
    app_id: str = "sohoa-assembly"
    ocr_app_id: str = "sohoa-ocr"
    web_port: int = 16066
    ocr_web_port: int = 16067
    web_host: str = "127.0.0.1"
    data_dir: Path = Path(".state/faust")
    # Where the Faust tables live (issue 24, docs/architecture.md "State store"):
    # "rocksdb" on disk under data_dir/<app id> (rocksdict), RAM flat in the campaign's size,
    # a restart on the same disk reads only the changelog written since; "memory" rebuilds
    # every table from its changelog on each start and holds it all in RAM.
    store: Literal["rocksdb", "memory"] = "rocksdb"
    # RocksDB's memory, one budget for every table partition database of the worker
    # (streams/rocksdb_memory.py): a memtable's size (two at most per database), the
    # memtables of all of them together, and the block cache they share (index and filter
    # blocks included).
    rocksdb_write_buffer_mb: int = Field(default=4, ge=1)
    rocksdb_memtables_mb: int = Field(default=32, ge=1)
    rocksdb_block_cache_mb: int = Field(default=32, ge=1)
    # Faust standby replicas of each table partition on other workers (docs/scaling.md,
    # "Restart and rebalance"): a worker taking over a partition it has a standby of reads
    # only the changelog's tail, at the cost of a second copy on disk and its changelog
    # read all the time. Useless with a single worker.
    standby_replicas: int = Field(default=0, ge=0)
    # 0 = as many as the source topic has (internal topics must be co-partitioned with it)
    table_partitions: int = 0
    replication_factor: int = 1    # of the internal topics (changelog, notes)
    idle_timeout_s: float = 3600.0
    idle_check_interval_s: float = 60.0
    late_page_settle_s: float = 60.0  # a reopened file is re-assembled after this quiet time
    qc_enabled: bool = True
    site_duplicate_check: bool = True  # a page identical to one in another file of the site
    commit_every: int = 1000
    producer_linger_s: float = 0.02   # batch changelog and output records
    batch_max_events: int = 2000      # assembly folds up to this many events per table write
    batch_within_s: float = 0.5      # longest an event waits for its batch
    # Decoded file states kept beside the table (least recently used dropped): the table
    # already holds every file, so an unbounded copy would grow with every page scanned.
    # Bounded in files and in their pages (≈ 0.6 KB of memory each, decoded and raw).
    state_cache_files: int = Field(default=2000, ge=1)
    state_cache_pages: int = Field(default=100_000, ge=1)
    # An assembled file's state is stored deflated (zlib level; 0 keeps it as plain JSON):
    # about a quarter of the bytes, and lossless, as a late page needs every page again.
    state_compress_level: int = Field(default=6, ge=0, le=9)
    commit_interval_s: float = 2.0
    # aiokafka's default is 5 min. A rebalance that runs while a broker is coming back can
    # assign a topic no partitions ("No partition metadata for topic"); the worker only
    # rejoins when its next metadata refresh sees the partitions, so this bounds that stall.
    metadata_max_age_s: float = 30.0
    # How long the group coordinator waits for a member that stopped heartbeating (Faust's
    # default is 60 s). A worker restarted after a kill -9 joins under a new member id, and
    # the coordinator holds the rebalance until the dead member's session expires: with 60 s
    # every restart after a crash took a minute whatever the table's size (docs/scaling.md,
    # "Restart and rebalance"). Heartbeats run on the consumer's own thread every 3 s, so a
    # busy agent does not miss them; the broker refuses less than 6 s.
    session_timeout_s: float = Field(default=15.0, ge=6.0)
    loglevel: str = "WARNING"      # of Faust's own worker logging


class VerdictConfig(Section):
    # A file with more failed pages than this share is rejected as a whole (redo the file) ...
    max_failed_pages_share_for_reject: float = 0.5
    reject_min_pages: int = 4      # ... when it has at least this many pages
    min_mean_ocr_confidence: float = 0.0


class ConsumerConfig(Section):
    group_id: str = "sohoa-progress"
    # Only a backlog fills a batch (batch_max_ms closes it otherwise); then each merge statement's
    # fixed cost is shared by more events, so a larger batch costs less CPU per event
    # (bench/bench_consumer.py).
    batch_max_events: int = 8000
    # The window is most of a page's time from event to row. At 3,000 pages/s (bench_latency,
    # docs/scaling.md) 200 ms gave p99 1.4–2.0 s against 2.8–3.4 s at 500 ms; at 100 ms the
    # batches' fixed cost made queues (p99 2.8–3.6 s).
    batch_max_ms: int = 200
    # Kafka's rebalance timeout for the group: how long the broker holds a rejoin open for the
    # members, and how long this client waits for the JoinGroup answer (plus 5 s). A batch is
    # written in seconds, so a member silent this long is stuck; kafka-python's default
    # (300 s) let one stalled rejoin leave the consumer with no partitions for five minutes.
    max_poll_interval_s: float = Field(default=60.0, ge=10.0)
    # kafka-python 3.0 has been seen to leave a member reading nothing while records wait:
    # assigned no partitions after a join, or polling partitions it never fetches. Every this
    # long without a record, the consumer asks the broker whether any wait; when two checks in
    # a row say so, it starts a new Kafka client (consumers/consumer.py, ``_check_stall``).
    # Two checks span more than the group session (kafka-python's 45 s), which a consumer
    # restarted after a kill -9 rightly waits out, and a broker's return after an outage.
    stall_s: float = Field(default=30.0, ge=1.0)
    metrics_port: int = 19100
    metrics_host: str = "127.0.0.1"
    gauge_cache_s: float = 10.0


class CampaignConfig(Section):
    name: str = "Số hóa tài liệu lưu trữ"
    timezone: str = "Asia/Ho_Chi_Minh"
    workdays: list[int] = [0, 1, 2, 3, 4]  # Monday=0
    work_start: time = time(7, 30)
    work_end: time = time(17, 0)
    lunch_start: time = time(11, 30)
    lunch_end: time = time(13, 30)
    forecast_window_days: int = 10


class SignerConfig(Section):
    """Who signs: quyền hạn ký (``KT. GIÁM ĐỐC``; Party: ``T/L BAN THƯỜNG VỤ``), chức vụ, họ tên."""

    model_config = ConfigDict(extra="forbid")

    authority: str = ""
    title: str = "GIÁM ĐỐC"
    name: str = ""


class IssuerConfig(Section):
    """The body that issues the reports, in the form its system prescribes: ``state`` (Nghị
    định 30/2020/NĐ-CP) or ``party`` (Hướng dẫn 36-HD/VPTW of the Party's Central Office)."""

    model_config = ConfigDict(extra="forbid")

    form: Literal["state", "party"] = "state"
    # The heading writes both in capitals, as the forms require.
    parent: str = "Ủy ban nhân dân tỉnh"    # cơ quan chủ quản trực tiếp ("" when none)
    name: str = "Sở Nội vụ"                 # cơ quan ban hành
    full_name: str = ""                     # in running text, e.g. "Sở Nội vụ tỉnh Đồng Nai"
    abbreviation: str = Field(default="SNV", min_length=1)  # in the symbol: BC-SNV / BC/VPTU
    place: str = ""                         # địa danh, e.g. "Đồng Nai"
    # The register number; left blank the office's văn thư writes it on issue.
    number: str = ""
    recipients: list[str] = []              # Nơi nhận, one line each
    archive: str = "VT"                     # "Lưu: VT, …" (state) / "Lưu Văn phòng" (party)
    signer: SignerConfig = SignerConfig()

    @field_validator("abbreviation")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if re.search(r"[\s/]", v):
            raise ValueError("no spaces or '/' in an abbreviation (e.g. SNV, VPTU)")
        return v


class UnitPrices(Section):
    """Đơn giá in đồng: per page up to A4, per A3 page, and per A4 equivalent of a larger page.
    A3 left out costs two A4 pages, larger pages cost the A4 price per equivalent."""

    model_config = ConfigDict(extra="forbid")

    a4: int = Field(gt=0)
    a3: int | None = Field(default=None, gt=0)
    larger: int | None = Field(default=None, gt=0)

    @property
    def a3_price(self) -> int:
        return self.a3 if self.a3 is not None else 2 * self.a4

    @property
    def larger_price(self) -> int:
        return self.larger if self.larger is not None else self.a4


class ContractConfig(Section):
    """One digitization contract: the acceptance record's parties, number and prices."""

    model_config = ConfigDict(extra="forbid")

    contractor: str = Field(min_length=1)  # as the plan names it (case and accents ignored)
    number: str = Field(min_length=1)      # số hợp đồng, e.g. "15/2026/HĐ-SNV"
    signed: date | None = None
    name: str = "Số hóa tài liệu lưu trữ"  # tên hợp đồng / gói thầu
    legal_name: str | None = None          # bên B in full; default the contractor
    representative: str = ""
    representative_title: str = "Giám đốc"
    # Bên A's representative; default the issuer's signer.
    client_representative: str | None = None
    client_representative_title: str | None = None
    unit_prices: UnitPrices
    vat_included: bool = True
    copies: int = Field(default=4, ge=1)    # "lập thành 04 bản"


class ReportsConfig(Section):
    """Figures of the reports officers sign, and the form they are issued in."""

    model_config = ConfigDict(extra="forbid")

    # A page counts as A4 (or A3) when each side exceeds that format's by at most this share,
    # and a larger page's area is shrunk by it on each side before it is divided by A4's:
    # scanners add a margin, and physical sizes come from pixels ÷ dpi. 3 % is ~6 mm on an A4
    # page's short side (US Letter counts as A4).
    page_size_tolerance: float = Field(default=0.03, ge=0, le=0.2)
    issuer: IssuerConfig = IssuerConfig()
    contracts: list[ContractConfig] = []
    # Prices a budget estimate uses for a site whose contractor has no contract above.
    budget_unit_prices: UnitPrices | None = None
    # A site's own size mix estimates its remaining pages once it has scanned this many pages
    # of known size; before that, the mix of every site's pages is assumed.
    budget_min_sample_pages: int = Field(default=200, ge=1)

    @field_validator("contracts")
    @classmethod
    def _one_contract_each(cls, v: list[ContractConfig]) -> list[ContractConfig]:
        from sohoa.naming import fold

        seen: set[str] = set()
        for c in v:
            key = fold(c.contractor)
            if key in seen:
                raise ValueError(f"two contracts for contractor {c.contractor!r}")
            seen.add(key)
        return v


def _sim_topics() -> TopicsConfig:
    return TopicsConfig(site_events="sohoa.sim.site-events", file_events="sohoa.sim.file-events",
                        dead_letters="sohoa.sim.dead-letters")


class SimulateConfig(Section):
    """`sohoa simulate`: synthetic campaign traffic for demos, the boards' tests, benchmarks.

    Simulated traffic lives apart from real work: its own topics (never the ones in `topics`,
    which the real workers read) and its own database for the plan (never `postgres.dsn`).
    A consumer pointed at both (`SOHOA_TOPICS__*`, `SOHOA_POSTGRES__DSN`) shows it on boards."""

    topics: TopicsConfig = Field(default_factory=_sim_topics)
    postgres_dsn: SecretStr | None = Field(
        default=None, description="Database the simulated plan is imported into (--plan-out)")

    sites: int = Field(default=8, ge=1, le=5000)
    days: int = Field(default=10, ge=0, le=400, description="Working days of history")
    pages_per_day: int = Field(default=400, ge=1, description="Mean pages per site per day")
    speed: float = Field(default=60.0, gt=0, description="Simulated seconds per real second")
    seed: int = 1
    file_pages_min: int = Field(default=8, ge=1)
    file_pages_max: int = Field(default=40, ge=1)
    qc_fail_share: float = Field(default=0.02, ge=0, le=1)
    qc_fail_share_high: float = Field(default=0.35, ge=0, le=1)
    stall_hours: float = Field(default=3.0, gt=0, description="Stalled site: idle this long")
    outage_hours: float = Field(default=1.5, gt=0, description="Offline site: outbox this old")
    deadline_days: int = Field(default=30, ge=1, description="Plan deadline, days from today")
    heartbeat_interval_s: float = 900.0
    ocr_lag_s: float = Field(default=3600.0, ge=0,
                             description="Simulated close-to-verdict time (OCR backlog)")
    image_px: tuple[int, int] = (1240, 1754)  # A5 at 200 dpi: passes the TT 02 floor


class IdentityConfig(Section):
    """Which site produced a record (`sohoa/identity.py`): HMAC-SHA256 under a per-site secret."""

    model_config = ConfigDict(extra="forbid")

    # The site agent: this site's own secret; every record it sends is signed with it.
    site_secret: SecretStr | None = None
    # The centre: every site's secret. Once any is set, the assembly app and the consumer refuse
    # a site event that is unsigned, signed with another key, or claims another site.
    sites: dict[str, SecretStr] = {}

    @field_validator("sites")
    @classmethod
    def _sites(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        bad = [s for s in v if not re.match(SITE_ID_RE, s)]
        if bad:
            raise ValueError(f"not a site id: {bad}")
        for site, secret in v.items():
            _long_enough(secret, f"identity.sites.{site}")
        return v

    @field_validator("site_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            _long_enough(v, "identity.site_secret")
        return v


def _long_enough(secret: SecretStr, name: str) -> None:
    if len(secret.get_secret_value()) < 32:
        raise ValueError(f"{name}: at least 32 characters (e.g. `openssl rand -hex 32`)")


class SigningConfig(Section):
    """The digitizing body's signature on each digitized document (Art. 8 TT 05/2025):
    `deliver/signing.py`. The key comes from a PKCS#12 file or a PKCS#11 token (USB token)."""

    model_config = ConfigDict(extra="forbid")

    body_name: str = Field(default="", description="Tên cơ quan số hóa, shown on the stamp")
    pkcs12_path: Path | None = None
    pkcs12_passphrase: SecretStr | None = None
    pkcs11_lib: Path | None = Field(default=None, description="The token's PKCS#11 module")
    pkcs11_token_label: str | None = None
    pkcs11_pin: SecretStr | None = None
    pkcs11_key_label: str | None = None
    pkcs11_cert_label: str | None = None
    # Times New Roman where installed, else a metric-compatible font (Liberation Serif).
    font_path: Path | None = None
    timezone: str = "Asia/Ho_Chi_Minh"   # the signing time on the stamp (ISO 8601)
    font_size_pt: float = 10.0
    margin_pt: float = 18.0              # from the first page's top and right edges
    # CA certificates a signature must chain to (`handover verify`, the signing self-check).
    trust_roots: list[Path] = []


class DeliverConfig(Section):
    """Packages and hand-overs (`sohoa package`, `sohoa handover`)."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path = Path(".state/deliver")
    # The receiving archive's code, prefixed to arcFileCode / arcDocCode (Art. 17).
    archive_code: str = ""
    agency_name: str = Field(default="", description="Cơ quan giao nộp (biên bản)")
    receiver_name: str = Field(default="", description="Lưu trữ lịch sử nhận (biên bản)")


# A password hash as `sohoa web hash-password` writes it (Werkzeug's format: method$salt$hash).
_PASSWORD_HASH_RE = r"^(scrypt|pbkdf2)(:[A-Za-z0-9]+)*\$[^$]+\$[0-9a-f]+$"


class WebConfig(Section):
    """`sohoa web`: the province office's read-only page (`web/`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"  # loopback: another address is an explicit choice
    port: int = 18080
    threads: int = Field(default=4, ge=1)
    # How a visitor proves who they are: "login" (users below, a session cookie) or "proxy"
    # (a reverse proxy on a trusted address authenticates and names the user in a header).
    auth: Literal["login", "proxy"] = "login"
    # user name -> password hash (`sohoa web hash-password`); never a password in clear.
    users: dict[str, SecretStr] = {}
    # Signs the session cookie. Unset: a random key per start (everyone logs in again after a
    # restart); set one (`openssl rand -hex 32`) to keep sessions across restarts.
    session_secret: SecretStr | None = None
    session_hours: float = Field(default=12.0, gt=0)
    cookie_secure: bool = False  # true when served over HTTPS (behind a proxy, usually)
    login_attempts: int = Field(default=5, ge=1)   # failures per user and address ...
    login_lockout_s: float = Field(default=900.0, ge=0)  # ... then refused this long
    proxy_user_header: str = "X-Remote-User"
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]  # addresses allowed to set the header
    proxy_users: list[str] = []  # empty: every user the proxy authenticates
    files_per_page: int = Field(default=200, ge=10)

    @field_validator("users")
    @classmethod
    def _hashed(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            if not re.match(_PASSWORD_HASH_RE, value.get_secret_value()):
                raise ValueError(f"web.users.{name}: not a password hash; make one with "
                                 "`sohoa web hash-password`")
        return v

    @field_validator("session_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            _long_enough(v, "web.session_secret")
        return v


class MonitoringConfig(Section):
    """What `sohoa monitoring build` writes into the alert rules and boards."""

    model_config = ConfigDict(extra="forbid")

    # Absolute address of the runbook (docs/runbook.md) that every alert's runbook_url and the
    # boards' link point at, an alert's anchor appended (#sohoasitestalled). Default: the page
    # `sohoa web` serves on this machine.
    runbook_base_url: str = "http://127.0.0.1:18080/so-tay"

    @field_validator("runbook_base_url")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v) or "#" in v:
            raise ValueError("an absolute http(s) address without '#', e.g. "
                             "https://sohoa.example.gov.vn/so-tay")
        return v.rstrip("/")


class LoggingConfig(Section):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    level: str = "INFO"
    json_format: bool = Field(default=True, alias="json")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SOHOA_", env_nested_delimiter="__", extra="forbid",
    )

    kafka: KafkaConfig = KafkaConfig()
    topics: TopicsConfig = TopicsConfig()
    postgres: PostgresConfig = PostgresConfig()
    stack: StackConfig = StackConfig()
    watcher: WatcherConfig = WatcherConfig()
    qc: QcConfig = QcConfig()
    sources: SourcesConfig = SourcesConfig()
    store: StoreConfig = StoreConfig()
    upload: UploadConfig = UploadConfig()
    ocr: OcrConfig = OcrConfig()
    streams: StreamsConfig = StreamsConfig()
    verdict: VerdictConfig = VerdictConfig()
    consumer: ConsumerConfig = ConsumerConfig()
    campaign: CampaignConfig = CampaignConfig()
    reports: ReportsConfig = ReportsConfig()
    simulate: SimulateConfig = SimulateConfig()
    identity: IdentityConfig = IdentityConfig()
    signing: SigningConfig = SigningConfig()
    deliver: DeliverConfig = DeliverConfig()
    web: WebConfig = WebConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _upload_needs_store(self) -> Settings:
        st = self.store
        if self.upload.enabled and (st.endpoint is None or not st.access_key_id
                                    or st.secret_access_key is None):
            raise ValueError("upload.enabled needs [store] endpoint, access_key_id and "
                             "secret_access_key (this site's key)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The effective configuration with every secret masked: secret fields and password-like
        keys wholly, passwords inside DSNs and other strings (see sohoa.masking)."""
        from sohoa.masking import mask_tree

        return mask_tree(self.model_dump(mode="python", by_alias=True))


def config_file() -> Path | None:
    if _config_file is not None:
        return _config_file
    env = os.environ.get("SOHOA_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def load_config(path: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; ``path`` wins over ``$SOHOA_CONFIG``. A key no section
    knows, or a value of the wrong kind, is a :class:`sohoa.errors.ConfigError` naming it."""
    from pydantic import ValidationError

    from sohoa.errors import ConfigError

    global _config_file
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        _config_file = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_config_error(exc)) from None


def describe_config_error(exc: Any) -> str:
    """One line per fault, in Vietnamese first: the key with its section, and what is wrong."""
    lines = []
    for e in exc.errors():
        key = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden":
            section, _, name = key.rpartition(".")
            where = f"mục [{section}]" if section else "cấp ngoài cùng"
            lines.append(f"khóa không hợp lệ '{name}' trong {where} (unknown key {key})")
        else:
            lines.append(f"'{key}': {e['msg']}")
    return "; ".join(lines)
