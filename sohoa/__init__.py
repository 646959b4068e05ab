"""sohoa — event-driven pipeline for archival digitization campaigns (số hóa)."""

__version__ = "0.1.0"
