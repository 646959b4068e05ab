"""Helpers the tests share (builders, process runners, the fault spine); no tests here."""
