"""The deliverable per site (migration 009's ``v_site_deliverables``): files packaged, handed
over and verified at the receiving archive; shared by `sohoa status` and the monthly report."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class SiteDeliverable:
    files_packaged: int = 0
    files_handed_over: int = 0
    files_verified: int = 0
    files_verify_failed: int = 0
    pages_packaged: int = 0
    pages_verified: int = 0

    def short(self) -> str:
        """'đóng gói/bàn giao/đạt kiểm tra' counts, as the status table shows them."""
        text = f"{self.files_packaged}/{self.files_handed_over}/{self.files_verified}"
        return text + (f" ({self.files_verify_failed} lỗi)" if self.files_verify_failed else "")


def by_site(conn: psycopg.Connection, site: str | None = None) -> dict[str, SiteDeliverable]:
    rows = conn.execute(
        "SELECT site_id, files_packaged, files_handed_over, files_verified, "
        "files_verify_failed, pages_packaged, pages_verified FROM v_site_deliverables "
        "WHERE %(site)s::text IS NULL OR site_id = %(site)s::text", {"site": site}).fetchall()
    return {r[0]: SiteDeliverable(*(int(v) for v in r[1:])) for r in rows}
