"""Tests of the `sohoa` package."""
