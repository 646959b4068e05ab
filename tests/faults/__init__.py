"""Fault injection on the whole spine (`pytest -m faults`, `make test-faults`)."""
