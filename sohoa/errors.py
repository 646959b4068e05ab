"""Errors a supervisor and an officer can act on: one base class, one set of exit codes.

Every `sohoa` command exits with an :class:`ExitCode` (sysexits.h where one fits), so a
systemd unit, cron or Windows service can tell "fix the configuration" from "try again later".
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # The command failed: a check found the faults it lists (verify, reconcile, validate,
    # packages refused), or something unexpected happened (see the log; restarting may help).
    ERROR = 1
    # A wrong option or argument (click's own code); also a file the office typed (plan,
    # calendar, metadata spreadsheet) refused cell by cell, nothing written.
    USAGE = 2
    DATA = 65        # EX_DATAERR: the input given is wrong (a plan, a spreadsheet, a name)
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a service the command needs is down
    TEMPFAIL = 75    # EX_TEMPFAIL: try again later, nothing lost (Kafka unreachable…)
    CONFIG = 78      # EX_CONFIG: the configuration is wrong; restarting will not help


class SohoaError(Exception):
    """An error with a message for the person at the keyboard and the exit code it means."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(SohoaError, ValueError):
    exit_code = ExitCode.CONFIG
