"""sohoa's tests, grouped as the packages are; shared helpers in tests.support, fixtures in
conftest.py."""
