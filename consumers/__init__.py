"""Progress store in PostgreSQL (exactly-once effect), metrics, reports, reconcile."""
