"""Tests of the `deliver` package."""
