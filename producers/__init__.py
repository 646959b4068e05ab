"""Site agent: watches scanners' hot folders, stabilises, hashes, and sends page events
through a durable local outbox. Imports the kernel only: no Faust, no psycopg."""
