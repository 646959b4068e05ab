"""Tests of the `infra` package."""
