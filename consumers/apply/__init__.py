"""Apply a batch of events to PostgreSQL in one transaction, with exactly-once effect.

How a batch is written (all inside the caller's transaction):
1. every record is parsed (:mod:`.prepared`, in the consumer's parse process); valid events
   become staging rows (:mod:`.staging`: their columns declared once), COPYed in binary
   (:mod:`.copy_wire`) into a temporary staging table; invalid ones become dead-letter rows
   keyed by a stable id derived from topic/partition/offset;
2. duplicates inside the batch are dropped while parsing; the batch's audit rows, its new page
   revisions and its page checks are COPYed straight into their tables, or, when one is there
   already (a replay), the batch takes the careful path (:mod:`.writer`);
3. set-based statements merge the rest into the tables (:mod:`.statements`, holding
   :mod:`.sql_pages` and :mod:`.sql_files`). Every merge is commutative and derived columns
   (file state, page counts, daily progress) are recomputed from the stored facts for the keys
   the batch touched, so any order of arrival, replays and duplicates end in the same rows as
   an orderly stream.
"""

from consumers.apply.prepared import Prepared, prepare, prepare_wire, stage_rows
from consumers.apply.records import (
    BatchResult,
    DeadLetterRow,
    Record,
    SiteDefaults,
    dead_letter_for,
    reason_class,
    wire,
)
from consumers.apply.staging import STAGE_COLUMNS, StageRow
from consumers.apply.writer import BatchApplier, stored_offsets

__all__ = [
    "STAGE_COLUMNS",
    "BatchApplier",
    "BatchResult",
    "DeadLetterRow",
    "Prepared",
    "Record",
    "SiteDefaults",
    "StageRow",
    "dead_letter_for",
    "prepare",
    "prepare_wire",
    "reason_class",
    "stage_rows",
    "stored_offsets",
    "wire",
]
