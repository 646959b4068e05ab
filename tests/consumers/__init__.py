"""Tests of the `consumers` package."""
